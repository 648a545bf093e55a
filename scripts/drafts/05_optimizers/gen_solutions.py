"""Generate solutions/05_optimizers_from_scratch_solutions.ipynb."""
import nbformat
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
cells = []
md = lambda t: cells.append(nbformat.v4.new_markdown_cell(t.strip("\n")))
code = lambda t: cells.append(nbformat.v4.new_code_cell(t.strip("\n")))

md("""
# 05 · Solutions to the exercises

Worked answers to the exercises of [05 · Optimizers from scratch](../notebooks/05_optimizers_from_scratch.ipynb), each with a check of its answer. Exercises 1 and 3 step a 2-vector, exercise 4 a few random tensors, and exercises 2 and 5 read the seed bank's stored runs; nothing trains a model. CI runs this notebook in the `ci` profile.
""")
code("""
import numpy as np
import pandas as pd
import torch

import ftcourse.optim as fo
from ftcourse.course.bank import declared_runs
from ftcourse.course.notebook import notebook_setup

profile, device = notebook_setup()


def bowl_path(step, steps=40):
    "The points visited on f(x) = 0.1 x1^2 + 2 x2^2 from (-5, -2) by step(x) (x.grad set before each call)."
    x = torch.nn.Parameter(torch.tensor([-5.0, -2.0], dtype=torch.float64))
    path = [x.detach().clone()]
    for _ in range(steps):
        x.grad = torch.stack([0.2 * x.detach()[0], 4 * x.detach()[1]])
        with torch.no_grad():
            step(x)
        path.append(x.detach().clone())
    return torch.stack(path)


f = lambda path: 0.1 * path[:, 0] ** 2 + 2 * path[:, 1] ** 2
""")
md("""
## 1. Nesterov momentum

The buffer is the same, $b_t = \\mu b_{t-1} + g$; the step looks ahead: $\\theta \\leftarrow \\theta - \\gamma(g + \\mu b_t)$.
""")
code("""
def sgd_nesterov(p, g, s, lr, momentum=0.9):
    s["b"] = g.clone() if "b" not in s else momentum * s["b"] + g
    p -= lr * (g + momentum * s["b"])


state = {}
ours = bowl_path(lambda x: sgd_nesterov(x, x.grad, state, lr=0.03))
opt = {}
package = bowl_path(lambda x: opt.setdefault("o", fo.SGD([x], lr=0.03, momentum=0.9, nesterov=True)).step())
torch.testing.assert_close(package, ours, rtol=1e-12, atol=1e-12)
state, opt = {}, {}
plain = bowl_path(lambda x: opt.setdefault("o", fo.SGD([x], lr=0.03, momentum=0.9)).step())
overshoot = lambda path: (path[:, 1] > 0).sum().item()  # steps on the far side of the steep axis
print(f"f after 40 steps: Nesterov {f(ours)[-1]:.2e}, heavy ball {f(plain)[-1]:.2e}; steps past x2 = 0: "
      f"Nesterov {overshoot(ours)}, heavy ball {overshoot(plain)}")
assert overshoot(ours) <= overshoot(plain)
""")
md("""
The look-ahead term uses the gradient at the current point once more, which damps the oscillation across the steep axis: fewer steps on the far side, at the same lr and momentum.

## 2. The pilot's failure rates, with their intervals
""")
code("""
from scipy.stats import binomtest

from ftcourse.stats import runs_for_failure_rates

pilot = declared_runs("05", profile, "pilot")
runs = pd.DataFrame([{"optimizer": run.record["recipe"]["optimizer"], "lr": run.record["recipe"]["lr"],
                      "failed": bool(run.row["failed"])} for run in pilot.runs.values()])
cells = runs.groupby(["lr", "optimizer"]).failed.agg(["sum", "count"])
intervals = [binomtest(int(k), int(n)).proportion_ci(0.95) for k, n in zip(cells["sum"], cells["count"])]
cells["rate [95%]"] = [f"{k / n:.2f} [{ci.low:.2f}, {ci.high:.2f}]" for k, n, ci in zip(cells["sum"], cells["count"], intervals)]
print(cells["rate [95%]"].unstack("optimizer").to_string())
rates = (cells["sum"] / cells["count"]).unstack("optimizer")
gap = (rates["BERTAdam"] - rates["AdamW"]).abs()
lr = gap.idxmax()
high, low = max(rates.loc[lr]), min(rates.loc[lr])
if high > low:
    print(f"largest gap at lr {lr:g}: {high:.2f} against {low:.2f}; runs an arm to tell them apart with 80% power: "
          f"{runs_for_failure_rates(min(high, 0.99), max(low, 0.01))} (rates clipped to [0.01, 0.99])")
assert all(0 <= ci.low <= ci.high <= 1 for ci in intervals)
""")
md("""
With 4 runs a cell an interval spans most of [0, 1], so the pilot only finds a regime; a rate that is 0/4 in one arm and 4/4 in the other is the one case 4 runs can separate. Where the pilot's AdamW fails at the smallest lrs, it never left the majority-class plateau in 100 steps: a failure of run length, not of stability, which is why the comparison's lr is chosen among the lrs where AdamW never failed.

## 3. BERTAdam's first steps on the bowl
""")
code("""
opt = {}
bert = bowl_path(lambda x: opt.setdefault("o", fo.AdamW([x], lr=0.05, weight_decay=0.0, bias_correction=False)).step(), steps=10)
opt = {}
adam = bowl_path(lambda x: opt.setdefault("o", fo.AdamW([x], lr=0.05, weight_decay=0.0)).step(), steps=10)
first = (bert[1] - bert[0]).abs() / (adam[1] - adam[0]).abs()
expected = (1 - 0.9) / (1 - 0.999) ** 0.5
print(f"first step, BERTAdam / AdamW, per coordinate: {first.tolist()}; (1 - beta1) / sqrt(1 - beta2) = {expected:.4f}")
torch.testing.assert_close(first, torch.full_like(first, expected), rtol=1e-9, atol=0)
""")
md("""
Exactly section 2's ratio at $t = 1$: $(1-\\beta_1)/\\sqrt{1-\\beta_2} \\approx 3.16$, in every coordinate, whatever the gradient, since both divide $m$ by $\\sqrt v$ of the same gradient.

## 4. The article's LARS with the norm of the concatenation
""")
code("""
generator = torch.Generator().manual_seed(0)
weights = [torch.randn(n, generator=generator, dtype=torch.float64) * s for n, s in ((100, 1.0), (50, 3.0), (20, 0.5))]
grads = [torch.randn(w.shape, generator=generator, dtype=torch.float64) * 0.01 for w in weights]
eta, lam = 1e-3, 0.01


def article_lrs(weights, grads):
    "eta_i = eta * ||w|| / ||w_i|| / (||g|| + lam ||w||), with ||.|| of the concatenated vectors"
    w_all, g_all = torch.cat(weights).norm(), torch.cat(grads).norm()
    return torch.stack([eta * w_all / w.norm() / (g_all + lam * w_all) for w in weights])


before = article_lrs(weights, grads)
louder = [g * (10 if i == 2 else 1) for i, g in enumerate(grads)]  # the last tensor's gradient x10
change = article_lrs(weights, louder) / before
print("eta_i after the last tensor's gradient x10, relative to before:", [round(c, 4) for c in change.tolist()])
torch.testing.assert_close(change, torch.full_like(change, change[0].item()))  # one common factor
""")
md("""
No: $\\eta_i$ still depends on tensor $i$ only through $1/\\lVert w_i\\rVert$. A louder gradient anywhere changes $\\lVert g\\rVert$, one number for the whole model, so every tensor's lr moves by the same factor. Only a per-tensor ratio, $\\lVert w_i\\rVert / \\lVert g_i\\rVert$, reacts to each tensor's own gradient.

## 5. RMSprop against Adagrad, run by run
""")
code("""
sweep = declared_runs("05", profile, "lr sweep")
runs = pd.DataFrame([{"optimizer": run.record["recipe"]["optimizer"], "lr": run.record["recipe"]["lr"], "seed": seed,
                      "val_accuracy": run.row["val_accuracy"]} for (_, seed), run in sweep.runs.items()])
rms = runs[runs.optimizer == "RMSprop"].assign(adagrad_lr=lambda d: (d.lr * 10).round(12))
ada = runs[runs.optimizer == "Adagrad"].assign(adagrad_lr=lambda d: d.lr.round(12))
paired = rms.merge(ada, on=["adagrad_lr", "seed"], suffixes=(" RMSprop", " Adagrad"))
paired["difference"] = paired["val_accuracy RMSprop"] - paired["val_accuracy Adagrad"]
print(paired[["lr RMSprop", "lr Adagrad", "seed", "val_accuracy RMSprop", "val_accuracy Adagrad", "difference"]]
      .round(4).to_string(index=False))
print(f"mean |difference|: {paired.difference.abs().mean():.4f} over {len(paired)} pairs")
assert len(paired) == len(rms)  # every RMSprop run has its Adagrad partner
""")
md("""
The approximation holds while $t \\ll 1/(1-\\alpha) = 100$: the first steps of the two are nearly the same step. Over 120 steps RMSprop starts to forget its first gradients while Adagrad keeps them, so the pairs drift apart late in the run; the printed differences say how far by the end.
""")

nb = nbformat.v4.new_notebook()
nb.cells = cells
nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}, "language_info": {"name": "python"}}
nbformat.write(nb, ROOT / "solutions/05_optimizers_from_scratch_solutions.ipynb")
print("written", len(cells))
