"""ftcourse.lr_finder: the lr ramp, the recorded losses, early stop on divergence, restoring the
model and optimizer, the suggestions, and argument errors. Tiny models only (fast)."""
from __future__ import annotations

import math

import numpy as np
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


@pytest.mark.parametrize("args", [(1e-3, 1e-3, 10), (0.0, 1.0, 10), (1e-3, 1e-4, 10), (1e-5, 1.0, 1),
                                  (1e-5, math.inf, 10), (math.nan, 1.0, 10)])
def test_bad_ranges_raise(args):
    with pytest.raises(ValueError, match="Invalid"):
        range_test_lrs(*args)


@pytest.mark.parametrize("args,match", [((1e-5, 1.0, 2.5), "num_steps must be an int >= 2"),
                                        ((1e-5, 1.0, True), "num_steps must be an int >= 2"),
                                        (("1e-5", 1.0, 10), "start_lr must be a number")])
def test_arguments_of_the_wrong_type_raise_type_error(args, match):
    with pytest.raises(TypeError, match=match):
        range_test_lrs(*args)


def test_numpy_integer_num_steps():
    assert range_test_lrs(1e-6, 1e-1, np.int64(6)) == range_test_lrs(1e-6, 1e-1, 6)


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


# ---------------------------------------------------------------------------------------------
# Empty loaders, a non-finite first loss, parameter groups, the CPU snapshot
# ---------------------------------------------------------------------------------------------
def test_empty_loader_raises_a_clear_error_and_restores():
    model, opt = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="train_loader yielded no batch"):
        lr_range_test(model, [], opt, num_steps=5)
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)


def test_a_loader_that_cannot_be_iterated_again_raises_a_clear_error_and_restores():
    model, opt = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    once = (b for b in synthetic_batches(2))  # a generator: empty on its second pass
    with pytest.raises(ValueError, match="second pass, after 2 steps"):
        lr_range_test(model, once, opt, start_lr=1e-5, end_lr=1e-3, num_steps=5)
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 3e-4]


def test_non_finite_first_loss_gives_an_empty_result_whose_readers_say_why():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_range_test(model, [{"x": torch.ones(1, 2)}] * 3, opt, start_lr=1e-3, end_lr=1e-1, num_steps=3,
                           loss_fn=lambda model, batch: model(batch["x"]).sum() * float("nan"))
    assert result.diverged and result.lrs == [] and result.losses == [] and result.smoothed == []
    for read in (result.min_loss_lr, result.steepest_lr, result.suggestion, lambda: result.suggestion("steepest"),
                 result.plot):
        with pytest.raises(ValueError, match="no step was recorded: the loss was not finite at the first step"):
            read()
    with pytest.raises(ValueError, match="method"):  # a bad method is still reported as such
        result.suggestion("median")
    with pytest.raises(ValueError, match="no step was recorded: the result is empty"):
        LRRangeTestResult().suggestion()


def test_every_group_keeps_its_lr_ratio_and_the_largest_groups_lr_is_recorded():
    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=2, hidden=16)
    params = list(model.parameters())
    # LLRD-like: the first group at a quarter of the second's lr; the sweep is of the second's
    opt = torch.optim.AdamW([{"params": params[:5], "lr": 1e-4}, {"params": params[5:], "lr": 4e-4}])
    seen = []

    def loss_fn(model, batch):
        seen.append([g["lr"] for g in opt.param_groups])
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return nn.functional.cross_entropy(model(**inputs).logits, batch["labels"])

    result = lr_range_test(model, synthetic_batches(3), opt, start_lr=1e-6, end_lr=1e-2, num_steps=6,
                           loss_fn=loss_fn, diverge_factor=None)
    expected = range_test_lrs(1e-6, 1e-2, 6)
    assert result.lrs == expected  # the largest group's lr, exactly
    assert [top for _, top in seen] == expected
    assert [low for low, _ in seen] == pytest.approx([lr / 4 for lr in expected], rel=1e-12)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 4e-4]  # restored


def test_a_group_at_lr_zero_stays_at_zero():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.0}, {"params": [model.bias], "lr": 0.1}])
    seen = []

    def loss_fn(model, batch):
        seen.append([g["lr"] for g in opt.param_groups])
        return model(batch["x"]).pow(2).sum()

    lr_range_test(model, [{"x": torch.ones(1, 2)}], opt, start_lr=1e-3, end_lr=1e-1, num_steps=3, loss_fn=loss_fn,
                  diverge_factor=None)
    assert [low for low, _ in seen] == [0.0, 0.0, 0.0]
    assert [top for _, top in seen] == range_test_lrs(1e-3, 1e-1, 3)


def test_snapshot_is_an_independent_cpu_copy_that_keeps_state_dict_metadata():
    from ftcourse.lr_finder import _to_cpu

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    state = model.state_dict()
    copy = _to_cpu(state)
    assert copy._metadata == state._metadata  # module versions, read by load_state_dict
    for k, v in copy.items():
        assert v.device.type == "cpu" and torch.equal(v, state[k])
        assert v.data_ptr() != state[k].data_ptr(), k  # not a view of the live weights
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(3, 2)).sum().backward()
    opt.step()
    opt_copy = _to_cpu(opt.state_dict())
    assert opt_copy["param_groups"] == opt.state_dict()["param_groups"]
    assert all(t.data_ptr() != opt.state[p]["exp_avg"].data_ptr()
               for p, t in zip(model.parameters(), (s["exp_avg"] for s in opt_copy["state"].values())))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_snapshot_takes_no_gpu_memory_and_restoring_is_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 2)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 1024, device="cuda"), torch.randint(0, 2, (8,), device="cuda")
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {id(p): (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone(), opt.state[p]["step"].clone())
               for p in model.parameters()}
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    extra = []

    def loss_fn(model, batch):
        if not extra:  # the first step, before any gradient: only the snapshot could have been added
            extra.append(torch.cuda.memory_allocated() - before)
        return nn.functional.cross_entropy(model(batch["x"]), batch["y"])

    lr_range_test(model, [{"x": x, "y": y}] * 2, opt, start_lr=1e-5, end_lr=1.0, num_steps=6, loss_fn=loss_fn)
    # a GPU copy of the weights and of AdamW's two moments would add 3 x model_bytes here
    assert extra[0] < model_bytes / 4, (extra[0], model_bytes)
    for k, v in model.state_dict().items():
        assert v.device.type == "cuda" and torch.equal(v, weights[k]), k
    for p in model.parameters():
        exp_avg, exp_avg_sq, step = moments[id(p)]
        assert opt.state[p]["exp_avg"].device.type == "cuda"
        assert torch.equal(opt.state[p]["exp_avg"], exp_avg) and torch.equal(opt.state[p]["exp_avg_sq"], exp_avg_sq)
        assert torch.equal(opt.state[p]["step"], step) and opt.state[p]["step"].device == step.device


@pytest.mark.parametrize("kwargs, error, match", [
    # a negative max_grad_norm made the clip coefficient negative: every step went uphill, silently
    (dict(max_grad_norm=-1.0), ValueError, "max_grad_norm must be a finite number > 0, or None"),
    (dict(max_grad_norm=0), ValueError, "max_grad_norm must be a finite number > 0, or None"),
    (dict(max_grad_norm=math.nan), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=True), TypeError, "max_grad_norm"),
    (dict(max_grad_norm="1"), TypeError, "max_grad_norm"),
    # NaN passed `diverge_factor <= 1` and then never stopped a blow-up
    (dict(diverge_factor=math.nan), ValueError, "diverge_factor must be > 1 or None"),
    (dict(diverge_factor="4"), TypeError, "diverge_factor"),
    (dict(smoothing="0.05"), TypeError, "smoothing must be a number in \\(0, 1\\]"),
    (dict(smoothing=math.nan), ValueError, "smoothing"),
])
def test_bad_options_are_refused_before_any_step(kwargs, error, match):
    model = nn.Linear(2, 2)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(error, match=match):
        lr_range_test(model, [{"x": torch.ones(1, 2)}], opt, loss_fn=lambda m, b: m(b["x"]).sum(), **kwargs)
    assert torch.equal(model.weight, before)
