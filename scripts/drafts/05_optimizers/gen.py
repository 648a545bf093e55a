"""Generate notebooks/05_optimizers_from_scratch.ipynb (lesson first, evidence from the seed bank)."""
import nbformat
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
G = Path(__file__).resolve().parent
cells = []


def md(text, tags=None):
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    cells.append(cell)


def code(text, tags=None):
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    cells.append(cell)


old = lambda i, ext: (G / "old" / f"{i:02d}.{ext}").read_text()
PROFILES_PARAGRAPH = old(0, "md").split("\n")[4]

md(f"""
# 05 · Optimizers from scratch

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftcourse/ftcourse/blob/v0.1.0/notebooks/05_optimizers_from_scratch.ipynb)

{PROFILES_PARAGRAPH}

**Goal.** Write SGD with momentum, RMSprop, Adagrad, Adam, AdamW (and BERT's Adam without bias correction), LARS and LAMB from their update rules, a few lines each, watch them on a 2-D bowl, check them against the references, and then measure what the literature and two tutorials say about them:

1. the LARS formula of "Transformer训练技巧：优化器与学习率调整" (optimizers and LR schedules), replayed on a real model's gradients, against the paper's per-tensor trust ratio;
2. L2 regularisation as written in "Optimising pretrained Transformers", against Adam's coupled and AdamW's decoupled weight decay, and what L1 does to sparsity;
3. **BERTAdam against AdamW** in few-sample fine-tuning (Zhang et al. 2021): how often each fails, counted over many seeds, and how well each does at its own lr;
4. how sensitive each of the seven optimizers is to its lr when fine-tuning SST-2.

The experiments of 3 and 4 come from the seed bank (computed once, at the size the question needs); the notebook reruns two of them live. The package versions live in `ftcourse.optim`: each `step()` is a plain loop over the parameter tensors that reads like the update rule, and each file imports only torch.
""")
code(old(1, "py"))

lesson_md = old(2, "md").replace("## 1. The update rules", "## 1. The lesson: seven update rules, a few lines each")
lesson_md = lesson_md.replace("LARS and LAMB (section 2)", "LARS and LAMB (section 3)")
lesson_md = lesson_md.split("Adagrad's accumulator")[0] + (
    "Adagrad's accumulator $s$ only grows, so its steps shrink like $1/\\sqrt t$ for a steady gradient; RMSprop and Adam "
    "forget old gradients instead. Here is each rule as a function of one tensor $p$, its gradient $g$ and its state $s$ "
    "(a dict), in PyTorch's conventions:")
md(lesson_md, tags=["lesson"])
rules = (G / "lesson.py").read_text().split("\n\n\ndef f(x)")[0]
code(rules, tags=["lesson"])
md(r"""
On d2l's ill-conditioned bowl $f(x) = 0.1\,x_1^2 + 2\,x_2^2$ (20 times steeper along $x_2$), 40 steps from $(-5, -2)$, at an lr picked for each so that it gets somewhere in 40 steps (the lrs are not comparable across rules: that is section 6's point). Each path is then retraced by the package's optimizer (`ftcourse.optim`) on a `torch.nn.Parameter`, and the two must agree to float64 round-off.
""", tags=["lesson"])
code(r'''
import ftcourse.optim as fo


def bowl_gradient(x):
    return torch.stack([0.2 * x[0], 4 * x[1]])  # the gradient of f(x) = 0.1 x1^2 + 2 x2^2


def path_of(step, steps=40):
    "The points visited by step(p, g, state) (a lesson rule, or a package optimizer's step)."
    x = torch.nn.Parameter(torch.tensor([-5.0, -2.0], dtype=torch.float64))
    path = [x.detach().clone()]
    for _ in range(steps):
        x.grad = bowl_gradient(x.detach())
        with torch.no_grad():
            step(x)
        path.append(x.detach().clone())
    return torch.stack(path)


def rule_step(rule, **hyper):
    state = {}
    return lambda x: rule(x, x.grad, state, **hyper)


def package_step(make):
    box = {}
    return lambda x: (box.setdefault("opt", make([x]))).step()


cases = {  # name: (lesson rule and its hyperparameters, the package's optimizer)
    "SGD, momentum 0.9": (rule_step(sgd, lr=0.03), lambda p: fo.SGD(p, lr=0.03, momentum=0.9)),
    "RMSprop": (rule_step(rmsprop, lr=0.1), lambda p: fo.RMSprop(p, lr=0.1)),
    "Adagrad": (rule_step(adagrad, lr=1.0), lambda p: fo.Adagrad(p, lr=1.0)),
    "AdamW": (rule_step(adamw, lr=0.5), lambda p: fo.AdamW(p, lr=0.5, weight_decay=0.0)),
    "BERTAdam": (rule_step(adamw, lr=0.5, bias_correction=False),
                 lambda p: fo.AdamW(p, lr=0.5, weight_decay=0.0, bias_correction=False)),
    "LARS, momentum 0.9": (rule_step(lars, lr=100.0, weight_decay=0.01),
                           lambda p: fo.LARS(p, lr=100.0, momentum=0.9, weight_decay=0.01)),
    "LAMB": (rule_step(lamb, lr=0.1, weight_decay=0.01), lambda p: fo.LAMB(p, lr=0.1, weight_decay=0.01)),
}
fig, axes = plt.subplots(2, 4, figsize=(14, 5.6), sharex=True, sharey=True)
grid_x1, grid_x2 = torch.meshgrid(torch.linspace(-5.5, 2, 80), torch.linspace(-2.5, 2.5, 80), indexing="ij")
for ax, (name, (ours, theirs)) in zip(axes.flat, cases.items()):
    path, package_path = path_of(ours), path_of(package_step(theirs))
    torch.testing.assert_close(package_path, path, rtol=1e-12, atol=1e-12)  # the package takes the same steps
    ax.contour(grid_x1, grid_x2, 0.1 * grid_x1**2 + 2 * grid_x2**2, levels=12, colors="lightgrey")
    ax.plot(path[:, 0], path[:, 1], ".-", color="C3", ms=3, lw=1)
    ax.set_title(f"{name}\nf after 40 steps: {0.1 * path[-1, 0] ** 2 + 2 * path[-1, 1] ** 2:.2g}", fontsize=9)
axes.flat[-1].axis("off")
plt.tight_layout(); plt.show()
print(f"{len(cases)} lesson rules retraced by ftcourse.optim to float64 round-off")
''', tags=["lesson"])
md(r"""
What to look for: SGD's momentum overshoots along the steep axis; RMSprop, Adam and Adagrad divide each coordinate by its own gradient scale, so both axes move at about the same speed whatever their curvature; Adagrad's steps shrink as its sums grow; BERTAdam's first steps are larger than AdamW's (section 2 measures by how much); LARS and LAMB step by a fraction of the parameter's norm, which on a 2-vector is the distance to the origin.

## 2. Checking the package against the references
""" + old(4, "md").split("\n", 2)[2].replace("the formulas written here stand in for it", "the lesson's rules stand in for it"))
code(old(3, "py"))
code((G / "c05.py").read_text())
md(old(6, "md").replace("section 4's runs", "section 5's runs"))
code((G / "c07.py").read_text())

md(old(8, "md").replace("## 2. LARS and LAMB", "## 3. LARS and LAMB"))
code(old(9, "py"))
md(old(10, "md"))
code((G / "c11.py").read_text())
code(old(12, "py"))
md(old(13, "md"))
code(old(14, "py").replace("the next case and section 3", "the next case and section 4"))
code(old(15, "py"))
md(old(16, "md"))
code(old(17, "py"))
md(old(18, "md").replace("## 3. L2 in the loss", "## 4. L2 in the loss").replace("the model of section 2", "the model of section 3"))
code(old(19, "py"))
code(old(20, "py"))
md(old(21, "md"))
code(old(22, "py"))

md(r"""
## 5. BERTAdam against AdamW in few-sample fine-tuning

Zhang et al. (2021, "Revisiting Few-sample BERT Fine-tuning") traced much of the instability of fine-tuning on small data to the original BERT optimizer, which skips Adam's bias correction: over many random seeds, BERTAdam left more runs failed and a lower mean, most of all on the smallest datasets. Their setting: BERT-large on small GLUE datasets (a few thousand examples), the BERT recipe (linear warmup over 10% of the steps, then linear decay, 3 epochs).

**The regime here**: all-MiniLM-L6-v2, 320 SST-2 examples × 5 epochs (100 steps) with the baseline's warmup and decay, evaluated on 256 validation and 512 test sentences. The two optimizers are identical but for `bias_correction` (both with AdamW's decoupled decay, as BERT's). A **failed run** (Mosbach et al. 2021; fixed before any run): it diverged, or its test accuracy is at or below the majority class's share. Failures are counted, never averaged: Fisher's exact test on the counts.

**The design, in the declaration before the build:**
1. a **pilot** over lrs from 1e-5 to 3e-4 (BERTAdam's grid reaches down: its early steps are several times Adam's), 4 seeds each, seeds the comparisons never reuse;
2. the **failure comparison** at the pilot lr where BERTAdam's failures exceed AdamW's the most, among the lrs at which AdamW never failed (so a failure there is instability, not a run too short to leave the plateau; a tie goes to the larger lr), runs per arm sized by power for Zhang et al.'s kind of difference;
3. each optimizer at **its own lr** (the best pilot lr on validation), 8 fresh seeds, paired.
""")
code(r'''
import numpy as np

from ftcourse.course.bank import declaration_of, declared_runs
from ftcourse.stats import compare, failure_power, failure_rates, format_effect, runs_for_failure_rates, verdict_text

banked = declaration_of("05_optimizers_from_scratch")  # the bank's declaration (cpu sizes)
o = profile.optimizers
pilot = declared_runs("05", profile, "pilot")
pilot_runs = pd.DataFrame([{"optimizer": run.record["recipe"]["optimizer"], "lr": run.record["recipe"]["lr"], "seed": seed,
                            "failed": bool(run.row["failed"]), "val_accuracy": run.row["val_accuracy"]}
                           for (_, seed), run in pilot.runs.items()])
by_cell = pilot_runs.groupby(["lr", "optimizer"])
table = pd.DataFrame({"failed": by_cell.failed.agg(lambda f: f"{int(f.sum())}/{len(f)}"),
                      "validation accuracy": by_cell.val_accuracy.mean().round(4)}).unstack("optimizer")
print(table.to_string())
rate = by_cell.failed.mean().unstack("optimizer")
eligible = rate.index[rate["AdamW"] == 0]  # AdamW left the plateau in every pilot run there
gap = rate.loc[eligible, "BERTAdam"] - rate.loc[eligible, "AdamW"]
failure_lr = max(lr for lr in eligible if gap[lr] == gap.max())
own_lr = by_cell.val_accuracy.mean().unstack("optimizer").idxmax()  # each optimizer's best lr on validation
print(f"failure comparison at lr {failure_lr:g} (BERTAdam minus AdamW failure share there: {gap[failure_lr]:+.2f}); "
      f"own lrs on validation: AdamW {own_lr['AdamW']:g}, BERTAdam {own_lr['BERTAdam']:g}")
lrs = sorted(rate.index)
for name in ("AdamW", "BERTAdam"):
    if own_lr[name] in (lrs[0], lrs[-1]):
        print(f"{name}'s own lr is at the edge of the pilot's grid")
by_failures = next(c for c in banked.comparisons if c.kind == "failures")
by_own = next(c for c in banked.comparisons if c.kind == "paired")
few_recipes = banked.recipes("failures")
assert few_recipes[by_failures.a].lr == failure_lr  # the declaration's lr is this choice
assert (banked.recipes("own lrs")[by_own.b].lr, banked.recipes("own lrs")[by_own.a].lr) == (own_lr["AdamW"], own_lr["BERTAdam"])
''')
code(r'''
failures = declared_runs("05", profile, "failures")
fail = failures.results
flags = {label: fail[fail.label == label].sort_values("seed").failed.to_numpy(bool) for label in (by_failures.a, by_failures.b)}
n = len(flags[by_failures.b])
more = failure_rates(flags[by_failures.a], flags[by_failures.b])
print(f"runs an arm to detect 30% against 5% with 80% power: {runs_for_failure_rates(0.30, 0.05)}; declared: {n}")
print(f"{by_failures.a} against {by_failures.b}: {verdict_text(more)}")
base = more["rate_b"]
detectable = min((r for r in np.arange(base, 1.0, 0.01) if failure_power(r, base, n) >= 0.8), default=None)
if detectable is not None:
    print(f"at AdamW's rate ({base:.0%}) and {n} runs an arm, the test detects a rise to {detectable:.0%} or more with 80% power")
failure_recipe = few_recipes[by_failures.b]
failure_scope = (f"{failure_recipe.model_id.split('/')[-1]} (a sentence encoder), {failure_recipe.train_size} SST-2 examples x "
                 f"{failure_recipe.epochs} epochs ({failure_recipe.total_steps()} steps), lr {failure_recipe.lr:g} with warmup, "
                 f"{n} runs an arm, tested on {failure_recipe.test_size} sentences")
print(failure_scope)

own = declared_runs("05", profile, "own lrs")
own_row = compare(own.results, pairs=[(by_own.a, by_own.b)], correct=None).iloc[0]
own_scope = (f"the same regime, each at its own pilot lr (BERTAdam {own_lr['BERTAdam']:g}, AdamW {own_lr['AdamW']:g}), "
             f"{own.results.seed.nunique()} seeds")
print(f"{by_own.a} - {by_own.b}: {verdict_text(own_row)}")
''')
code(r'''
test_labels = failures.labels["test"]
majority = np.bincount(test_labels).max() / len(test_labels)
fig, (ax_acc, ax_grad) = plt.subplots(1, 2, figsize=(13, 4))
arms = (by_failures.b, by_failures.a)
for i, label in enumerate(arms):
    accuracy = fail[fail.label == label].test_accuracy.to_numpy()
    jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(accuracy))
    ax_acc.plot(i + jitter, accuracy, "o", color=f"C{i}", alpha=0.6, ms=5)
ax_acc.axhline(majority, color="grey", ls=":", label="majority-class share: at or below = failed")
ax_acc.set_xticks([0, 1], [f"{label}\n{int(flags[label].sum())}/{n} failed" for label in arms])
ax_acc.set_ylabel("test accuracy"); ax_acc.legend(fontsize=8); ax_acc.set_title(f"one point a run, lr {failure_lr:g}", fontsize=10)
traces = {}  # the gradient norm clipping measured, every step of every run, by (arm, failed)
for (label, seed), run in failures.runs.items():
    traces.setdefault((label, bool(run.row["failed"])), []).append(run.steps().grad_norm.to_numpy())
for i, label in enumerate(arms):
    for failed_, style, name in ((False, "-", "succeeded"), (True, "--", "failed")):
        if (label, failed_) in traces:
            stack = np.vstack(traces[label, failed_])
            ax_grad.plot(np.arange(1, stack.shape[1] + 1), np.median(stack, axis=0), style, color=f"C{i}",
                         label=f"{label}, {name} ({len(stack)} runs)")
ax_grad.set_yscale("log"); ax_grad.set_xlabel("optimizer step"); ax_grad.set_ylabel("gradient norm (before clipping), median")
ax_grad.legend(fontsize=8); ax_grad.set_title("the whole model's gradient norm, failed and successful runs", fontsize=10)
plt.tight_layout(); plt.show()
''')
md(r"""
**Per layer: do failed runs' gradients vanish?** Mosbach et al. (2021, "On the Stability of Fine-tuning BERT: Misconceptions, Explanations, and Strong Baselines") found that in failed runs the gradients of the bottom layers vanish, orders of magnitude below the top's. The bank stores only the whole model's gradient norm, so two stored runs of each kind are rerun live (the seeds in `profile.optimizers.gradient_seeds`, chosen from the stored failure arm) with `ftcourse.grad_norms.BlockNorms` attached to their optimizer: the same recipe, so each reruns the stored run (bit for bit on the machine that built the bank), now with every block's gradient at every step.
""")
code(r'''
from ftcourse.course.runner import fine_tune
from ftcourse.grad_norms import BlockNorms

gradient_recipe = few_recipes["BERTAdam"] if "BERTAdam" in few_recipes else few_recipes[by_failures.a]
recorders, outcome = {}, {}
for seed in o.gradient_seeds:
    captured = {}

    def recording_optimizer(groups, lr, device, seed=seed):
        from ftcourse.course.runner import make_optimizer
        optimizer = make_optimizer(gradient_recipe.optimizer, groups, lr, device, **gradient_recipe.optimizer_kwargs)
        recorders[seed] = BlockNorms(captured["model"], optimizer, gradient_recipe.total_steps())
        return optimizer

    result = fine_tune(gradient_recipe.replace(seed=seed), prepare_model=lambda m: captured.update(model=m),
                       optimizer=recording_optimizer, label=f"{by_failures.a}, per-block gradients", progress=False)
    outcome[seed] = "failed" if result.row["failed"] else "succeeded"
block_norms = pd.concat([pd.DataFrame(r.rows).assign(seed=s, outcome=outcome[s]) for s, r in recorders.items()])
block_norms["block"] = block_norms["block"].map(lambda b: b if isinstance(b, str) else f"layer {b}")
last = block_norms[block_norms.step > block_norms.step.max() - 20]  # the last 20 steps
per_block = last.pivot_table(index="block", columns="outcome", values="grad_norm", aggfunc="median")
order = ["embeddings", *[f"layer {i}" for i in range(len(per_block) - 2)], "head"]
per_block = per_block.reindex(order)
print("median gradient norm over the last 20 steps, by block:", {s: outcome[s] for s in o.gradient_seeds})
print(per_block.to_string(float_format=lambda x: f"{x:.3g}"))
if {"failed", "succeeded"} <= set(per_block.columns):
    ratio = per_block["failed"] / per_block["succeeded"]
    print(f"failed / succeeded: {ratio.min():.2g}x to {ratio.max():.2g}x across the blocks "
          f"(bottom block {ratio['layer 0']:.2g}x, top block {ratio.iloc[-2]:.2g}x)")
''')
md(r"""
**Reading it.** The Fisher line gives the verdict on failures at the chosen lr, with the odds ratio's interval and how large a rise the counts could detect; the paired line compares the two at their own lrs. The figure shows the per-seed distribution (Zhang et al.'s way of looking at it) and the whole-model gradient norm of failed and successful runs; the table above splits it by block for the live reruns: whether a failed run's gradients are smaller in every block alike, or in the bottom blocks most (Mosbach et al.'s reading).

## 6. Seven optimizers: how sensitive is each to its lr?

Comparing optimizers at one lr compares step sizes, not optimizers: LARS and LAMB take steps relative to the weights' norms, SGD's step is proportional to the gradient, Adam's, RMSprop's and Adagrad's are normalised per coordinate. So each gets a curve: validation accuracy against lr, over 3 seeds at each of 3 lrs a factor ~3 apart, in a regime long enough to leave the majority-class plateau at a good lr (960 examples × 2 epochs = 120 steps; SGD and LARS with momentum 0.9). No verdicts from these curves: they say where each optimizer works, and where a grid never worked ("not tuned") or peaks at its edge.

**RMSprop and Adagrad.** For $t \ll 1/(1-\alpha)$ (100 steps at $\alpha = 0.99$), RMSprop's $v_t = (1-\alpha)\sum_{k \le t} \alpha^{t-k} g_k^2 \approx (1-\alpha)\, s_t$, so its step $\gamma g/\sqrt{v}$ is Adagrad's at lr $\gamma/\sqrt{1-\alpha} = 10\gamma$. RMSprop's grid is Adagrad's divided by 10, so the two curves should nearly coincide on Adagrad's lr axis (dashed).
""")
code(r'''
sweep = declared_runs("05", profile, "lr sweep")
rows = [{"optimizer": run.record["recipe"]["optimizer"], "lr": run.record["recipe"]["lr"], "seed": seed,
         "val_accuracy": run.row["val_accuracy"], "failed": bool(run.row["failed"])} for (_, seed), run in sweep.runs.items()]
curves = pd.DataFrame(rows).groupby(["optimizer", "lr"]).agg(mean=("val_accuracy", "mean"), low=("val_accuracy", "min"),
                                                            high=("val_accuracy", "max"), failed=("failed", "sum"),
                                                            runs=("seed", "count"))
status = {}
for name, curve in curves.groupby(level="optimizer", sort=False):
    curve = curve.droplevel("optimizer")
    best = curve["mean"].idxmax()
    status[name] = ("every lr failed: not tuned" if (curve.failed == curve.runs).all()
                    else f"best lr {best:g}" + (" (at the edge of the grid)" if best in (curve.index.min(), curve.index.max()) else ""))
print(curves.round(4).to_string())
print(pd.Series(status, name="status").to_string())
alpha = 0.99
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for i, (name, curve) in enumerate(curves.groupby(level="optimizer", sort=False)):
    curve = curve.droplevel("optimizer")
    ax = axes[0] if name in ("SGD", "LARS", "LAMB") else axes[1]
    ax.errorbar(curve.index, curve["mean"], yerr=[curve["mean"] - curve["low"], curve["high"] - curve["mean"]], fmt="o-",
                capsize=3, color=f"C{i}", label=name)
    if name == "RMSprop":  # on Adagrad's lr axis: lr / sqrt(1 - alpha)
        axes[1].plot(curve.index / (1 - alpha) ** 0.5, curve["mean"], "--", color=f"C{i}", alpha=0.6,
                     label="RMSprop at lr / sqrt(1 - alpha)")
for ax, title in zip(axes, ["steps relative to the weights (LARS, LAMB) or to the gradient (SGD)",
                            "steps normalised per coordinate"]):
    ax.set_xscale("log"); ax.set_xlabel("lr"); ax.set_ylabel("validation accuracy (mean; bars: min..max over seeds)")
    ax.set_title(title, fontsize=10); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()
sweep_recipe = next(iter(banked.recipes("lr sweep").values()))
sweep_scope = (f"{sweep_recipe.train_size} SST-2 examples x {sweep_recipe.epochs} epochs ({sweep_recipe.total_steps()} steps), "
               f"{curves.runs.max()} seeds an lr, validated on {sweep_recipe.val_size} sentences")
print(sweep_scope)
''')
md(r"""
The canaries: two short runs (at most 60 steps), BERTAdam in the few-sample regime at seed 0 and LAMB in the sensitivity regime at seed 1, rerun now beside their stored records (bit-identical on the machine that built the bank; elsewhere close, not equal). In `ci` they are the profile's own small runs.
""")
code(r'''
from ftcourse.course.bank import canaries

canaries("05", profile)
''', tags=["harness"])
md("## 7. Summary (computed)")
code(r'''
from ftcourse.course.reports import save_summary, summarize

summary = summarize(pd.concat([fail, own.results], ignore_index=True))
summary["failed"] = pd.concat([fail, own.results]).groupby("label", sort=False).failed.sum().reindex(summary.index).astype(int)
print(summary[["mean ± std", "count", "failed", "collapsed"]].to_string())
save_summary("05_optimizers_from_scratch", summary)
''')
md(r"""
## 8. Claims

Each claim with what this notebook measured, the interval its verdict follows, the test and the verdict (computed by `ftcourse.stats`, or replayed for the formulas and code). A "no detectable difference" whose mde is above ±0.02 says it could not detect that.
""")
claims_code = old(34, "py")
start = claims_code.index("rows = [")
end = claims_code.index('    claim("BERTAdam\'s early updates')
claims_code = claims_code[:start] + '''from ftcourse.course.reports import claim, save_claims

rows = [
    claim("BERTAdam (no bias correction) fails in more few-sample runs than bias-corrected AdamW", ZHANG, more,
          scope=failure_scope),
    claim("Without bias correction, few-sample fine-tuning ends worse (each at its own validated lr)", ZHANG, own_row,
          scope=own_scope, resolution=0.02),
''' + claims_code[end:]
claims_code = claims_code[:claims_code.index("for name in opt_compare.index:")] + '''for name, what in status.items():
    if "not tuned" in what or "edge" in what:
        rows.append(claim(f"{name} fine-tunes SST-2 within its lr grid", "this notebook's lr sensitivity curves",
                          effect=what, test="lr curve (3 seeds an lr, no verdict)", verdict=f"grid to extend: {what}",
                          scope=sweep_scope))
save_claims("05_optimizers_from_scratch", rows)
'''
code(claims_code)
md(old(35, "md").replace("(section 2 counts", "(section 3 counts"))
code(r'''
print(f"* BERTAdam against AdamW, failed runs at lr {failure_lr:g}: {verdict_text(more)}.")
print(f"* Each at its own lr (BERTAdam {own_lr['BERTAdam']:g}, AdamW {own_lr['AdamW']:g}): {verdict_text(own_row)}.")
for name, what in status.items():
    print(f"* {name}: {what}.")
''')
md(r"""
## Exercises

1. Add `nesterov=True` to the lesson's `sgd` rule (the step becomes $\gamma(g + \mu b_t)$) and check it against `fo.SGD(..., nesterov=True)` on the bowl. Does it overshoot less?
2. From the stored pilot, compute each optimizer's failure rate at every lr with its exact 95% interval: how many runs would separate the two at the lr where they differ most?
3. Rerun the lesson's bowl with BERTAdam and AdamW at the same lr for 10 steps: by how much is BERTAdam's first step larger, and does it match section 2's ratio?
4. Compute the article's LARS with the norm of the concatenated vectors ($\lVert(w_1,\dots,w_L)\rVert$ instead of $\sum_i\lVert w_i\rVert$). Does $\eta_i$ start to depend on $\lVert g_i\rVert$?
5. From the stored lr sweep, check the RMSprop ≈ Adagrad note run by run: pair each RMSprop run at lr $\gamma$ with Adagrad's at $10\gamma$ on the same seed, and compare their validation accuracies.

Worked solutions: `solutions/05_optimizers_from_scratch_solutions.ipynb`.
""")
code(r'''
# Footer: how long this notebook took, in which profile, on which machine, and the fine-tuning runs it made
# (CI checks them against the notebook's declaration in ftcourse/course/declarations.py).
from ftcourse.course.notebook import notebook_footer

notebook_footer('05_optimizers_from_scratch')
''', tags=["harness"])

nb = nbformat.v4.new_notebook()
nb.cells = cells
prev = nbformat.read(ROOT / "notebooks/05_optimizers_from_scratch.ipynb", as_version=4)
nb.metadata = prev.metadata
nbformat.write(nb, ROOT / "notebooks/05_optimizers_from_scratch.ipynb")
print("written", len(cells), "cells")
