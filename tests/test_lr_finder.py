"""ftcourse.lr_finder: the lr ramp, the recorded losses, early stop on divergence, restoring the
model and optimizer, the suggestions, and argument errors. Tiny models only (fast)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import synthetic_batches, tiny_classifier
from ftcourse.lr_finder import LRRangeTestResult, lr_range_test, range_test_lrs


def test_exp_ramp_is_geometric_and_hits_both_ends():
    lrs = range_test_lrs(1e-6, 1e-1, 6)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1e-1)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert all(r == pytest.approx(10.0) for r in ratios)


def test_linear_ramp_is_evenly_spaced():
    lrs = range_test_lrs(0.1, 0.5, 5, mode="linear")
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize("args", [(1e-3, 1e-3, 10), (0.0, 1.0, 10), (1e-3, 1e-4, 10), (1e-5, 1.0, 1), (1e-5, 1.0, 2.5)])
def test_bad_ranges_raise(args):
    with pytest.raises(ValueError, match="Invalid"):
        range_test_lrs(*args)


def test_bad_mode_and_options_raise():
    with pytest.raises(ValueError, match="mode"):
        range_test_lrs(1e-5, 1.0, 10, mode="log")
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="smoothing"):
        lr_range_test(model, [], opt, smoothing=0.0)
    with pytest.raises(ValueError, match="diverge_factor"):
        lr_range_test(model, [], opt, diverge_factor=1.0)


def _setup(seed=0):
    torch.manual_seed(seed)
    model = tiny_classifier("bert", num_layers=2, hidden=16)
    opt = torch.optim.AdamW([{"params": list(model.parameters())[:5], "lr": 1e-4},
                             {"params": list(model.parameters())[5:], "lr": 3e-4}])
    return model, opt


def test_records_every_step_without_divergence_check_and_cycles_the_loader():
    model, opt = _setup()
    batches = synthetic_batches(n_batches=3, batch_size=8)
    result = lr_range_test(model, batches, opt, start_lr=1e-6, end_lr=1e-4, num_steps=7, diverge_factor=None)
    assert not result.diverged
    assert result.lrs == pytest.approx(range_test_lrs(1e-6, 1e-4, 7))  # 7 steps from 3 batches: it cycled
    assert len(result.losses) == len(result.smoothed) == 7
    assert all(math.isfinite(x) for x in result.losses)
    # the first smoothed value is the first loss (bias-corrected EMA)
    assert result.smoothed[0] == pytest.approx(result.losses[0])


def test_smoothing_is_a_bias_corrected_ema():
    model, opt = _setup()
    result = lr_range_test(model, synthetic_batches(4), opt, start_lr=1e-6, end_lr=1e-5, num_steps=4,
                           smoothing=0.3, diverge_factor=None)
    avg = 0.0
    for k, loss in enumerate(result.losses):
        avg = 0.7 * avg + 0.3 * loss
        assert result.smoothed[k] == pytest.approx(avg / (1 - 0.7 ** (k + 1)))


def test_model_and_optimizer_are_restored():
    model, opt = _setup()
    batches = synthetic_batches(4)
    # give the optimizer some state first, as if training had started
    loss = nn.functional.cross_entropy(model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits,
                                       batches[0]["labels"])
    loss.backward()
    opt.step()
    opt.zero_grad()
    model.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    exp_avg = {id(p): opt.state[p]["exp_avg"].clone() for p in model.parameters()}
    lr_range_test(model, batches, opt, start_lr=1e-5, end_lr=1.0, num_steps=10)
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for p in model.parameters():
        assert torch.equal(opt.state[p]["exp_avg"], exp_avg[id(p)])
        assert p.grad is None
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 3e-4]
    assert not model.training  # mode restored too


def test_stops_when_the_loss_blows_up_and_suggests_below_the_blow_up():
    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=2, hidden=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = synthetic_batches(n_batches=8, batch_size=16, seed=1)
    result = lr_range_test(model, batches, opt, start_lr=1e-4, end_lr=1e6, num_steps=200, max_grad_norm=None,
                           smoothing=0.2, diverge_factor=2.0)
    assert result.diverged and len(result.lrs) < 200
    assert result.suggestion("min/10") == pytest.approx(result.min_loss_lr() / 10)
    assert result.lrs[0] <= result.steepest_lr() <= result.min_loss_lr() < result.lrs[-1]


def test_non_finite_loss_stops_without_recording():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        out = model(batch["x"]).sum()
        return out * (float("nan") if len(calls) == 3 else 1.0)

    batches = [{"x": torch.ones(1, 2)}] * 5
    result = lr_range_test(model, batches, opt, start_lr=1e-3, end_lr=1e-1, num_steps=5, loss_fn=loss_fn,
                           diverge_factor=None)
    assert result.diverged and len(result.lrs) == 2


def test_suggestions_on_a_known_curve():
    lrs = [10.0 ** e for e in range(-6, 0)]  # 1e-6 ... 1e-1
    smoothed = [1.0, 0.99, 0.9, 0.5, 0.45, 2.0]  # steepest fall per decade: 0.9 -> 0.5 (starts at 1e-4)
    result = LRRangeTestResult(lrs=lrs, losses=smoothed, smoothed=smoothed)
    assert result.min_loss_lr() == pytest.approx(1e-2)
    assert result.suggestion() == pytest.approx(1e-3)
    assert result.steepest_lr() == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="method"):
        result.suggestion("median")


def test_plot_returns_axes():
    import matplotlib

    matplotlib.use("Agg")
    lrs = [10.0 ** e for e in range(-6, 0)]
    result = LRRangeTestResult(lrs=lrs, losses=[1, 0.9, 0.7, 0.6, 0.8, 3], smoothed=[1, 0.95, 0.8, 0.7, 0.75, 1.5])
    ax = result.plot()
    assert ax.get_xscale() == "log"
