beta1, beta2 = 0.9, 0.999
t = torch.arange(1, 3001, dtype=torch.float64)
ratio = (1 - beta1**t) / torch.sqrt(1 - beta2**t)

# The same ratio measured on the package: the t-th step of each from the same state and gradient.
for t_check in (1, 10):
    steps = {}
    for bias_correction in (True, False):
        p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        opt = fo.Adam([p], lr=1e-3, bias_correction=bias_correction)
        for _ in range(t_check):
            before = p.detach().clone()
            p.grad = torch.full_like(p, 0.5)
            opt.step()
        steps[bias_correction] = (before - p.detach()).abs().max().item()
    assert math.isclose(steps[False] / steps[True], ratio[t_check - 1].item(), rel_tol=1e-6)

from ftcourse.course.declarations import optimizer_recipes

few = optimizer_recipes(profile)["few-sample"]  # section 5's regime (seed 0)
few_steps = few.total_steps()
few_warmup = round(few.warmup_ratio * few_steps)
after_warmup = ratio[few_warmup:few_steps]  # steps few_warmup + 1 .. few_steps

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(t, ratio)
ax.axvspan(1, few_steps, color="C1", alpha=0.15, label=f"section 5's runs ({few_steps} steps)")
ax.axhline(1, color="grey", ls=":")
ax.set_xscale("log"); ax.set_xlabel("step t"); ax.set_ylabel("BERTAdam step / Adam step")
ax.set_title("without bias correction, early steps are several times larger"); ax.legend()
plt.show()
for k in (1, 10, 100, 1000):
    print(f"t = {k:4d}: BERTAdam step = {ratio[k - 1].item():.2f} x Adam step")
print(f"largest ratio {ratio.max().item():.2f} at t = {int(ratio.argmax()) + 1}")
print(f"section 5: {few_steps} steps, the first {few_warmup} warmup; after warmup BERTAdam's steps are "
      f"{after_warmup.min().item():.2f}-{after_warmup.max().item():.2f}x Adam's at the same lr, so warmup "
      f"{'removes' if after_warmup.max().item() < 1.2 else 'does not remove'} the difference")