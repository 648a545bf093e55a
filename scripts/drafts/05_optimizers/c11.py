from ftcourse.course.data import cached_tokenizer, make_loader, profile_splits
from ftcourse.course.pretrained import load_model
from ftcourse.param_groups import decay_param_groups
from ftcourse.train import move_batch, set_seed

splits = profile_splits(profile, few.train_size)
tokenizer = cached_tokenizer(profile.model_id)
set_seed(0)
model = load_model(profile.model_id).to(device)
batch = move_batch(next(iter(make_loader(splits["train"], tokenizer, profile.batch_size, shuffle=True, seed=0))), device)
labels = batch.pop("labels")
model.train()
F.cross_entropy(model(**batch).logits, labels).backward()

lam, eta = profile.weight_decay, 1e-3  # the profile's weight decay; LARS's default trust coefficient
names = {p: n for n, p in model.named_parameters()}
decayed = decay_param_groups(model, lam)[0]["params"]  # the weight matrices, embeddings first, classifier last
head = len(decayed) - 1  # the classifier's output matrix, freshly initialised
w_norm = torch.stack([p.detach().norm() for p in decayed]).double().cpu()
g_norm = torch.stack([p.grad.norm() for p in decayed]).double().cpu()
print(f"one batch of {len(labels)} sentences; {len(decayed)} weight matrices (the last: {names[decayed[head]]}); ||g_i|| from "
      f"{g_norm.min().item():.2e} to {g_norm.max().item():.2e}, ||w_i|| from {w_norm.min().item():.2f} to {w_norm.max().item():.1f}")