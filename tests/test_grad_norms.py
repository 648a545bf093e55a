"""ftcourse.grad_norms.BlockNorms against norms computed by hand from the same steps (float64)."""
import pytest
import torch

from ftcourse.grad_norms import BlockNorms
from ftcourse.models import parameter_blocks
from tiny_models import tiny_model


def _step(model, optimizer, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (4, 9), generator=g)
    labels = torch.randint(0, 2, (4,), generator=g)
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(input_ids=ids).logits, labels).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # the recorder must see the clipped gradient


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_block_norms_match_norms_by_hand(family):
    model = tiny_model(family).double()
    # freeze the embeddings: a block without gradients must read 0, not fail
    for name, p in model.named_parameters():
        if parameter_blocks(model, trainable_only=False)[name] == "embeddings":
            p.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    recorder = BlockNorms(model, optimizer, max_steps=2)
    blocks = parameter_blocks(model, trainable_only=False)
    params = dict(model.named_parameters())
    expected = []
    for step in range(1, 4):
        _step(model, optimizer, step)
        before = {n: p.detach().clone() for n, p in params.items()}
        grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in params.items()}
        optimizer.step()
        if step <= 2:
            for block in dict.fromkeys(blocks.values()):
                names = [n for n, b in blocks.items() if b == block]
                g = [grads[n] for n in names if grads[n] is not None]
                expected.append({
                    "step": step, "block": block,
                    "grad_norm": torch.sqrt(sum((t ** 2).sum() for t in g)).item() if g else 0.0,
                    "weight_norm": torch.sqrt(sum((before[n] ** 2).sum() for n in names)).item(),
                    "update_norm": torch.sqrt(sum(((params[n].detach() - before[n]) ** 2).sum() for n in names)).item()})
    assert len(recorder.rows) == len(expected)  # step 3 not recorded: the hooks removed themselves
    assert recorder.handles == []
    for got, want in zip(recorder.rows, expected):
        assert (got["step"], got["block"]) == (want["step"], want["block"])
        for key in ("grad_norm", "weight_norm", "update_norm"):
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), (got, key)
    embeddings = [r for r in recorder.rows if r["block"] == "embeddings"]
    assert embeddings and all(r["grad_norm"] == 0.0 and r["update_norm"] == 0.0 for r in embeddings)
    assert {r["block"] for r in recorder.rows} >= {"embeddings", 0, 1, 2, "head"}


def test_block_norms_rejects_bad_arguments():
    model = tiny_model("bert")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="max_steps"):
            BlockNorms(model, optimizer, max_steps=bad)
    with pytest.raises(TypeError, match="optimizer"):
        BlockNorms(model, object(), max_steps=1)
