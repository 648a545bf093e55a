"""ftcourse.param_groups, and the weight_decay check every parameter-group builder shares."""
import numpy as np
import pytest
from tiny_models import tiny_model

from ftcourse.freezing import all_param_groups, trainable_param_groups
from ftcourse.llrd import grouped_llrd_param_groups, llrd_param_groups
from ftcourse.param_groups import check_weight_decay, decay_param_groups, is_no_decay

BUILDERS = {
    "decay_param_groups": lambda model, wd: decay_param_groups(model, wd),
    "all_param_groups": lambda model, wd: all_param_groups(model, wd),
    "trainable_param_groups": lambda model, wd: trainable_param_groups(model, wd),
    "llrd_param_groups": lambda model, wd: llrd_param_groups(model, 1e-3, 0.9, weight_decay=wd),
    "grouped_llrd_param_groups": lambda model, wd: grouped_llrd_param_groups(model, [1e-4, 1e-3], weight_decay=wd),
}


@pytest.fixture(scope="module")
def model():
    return tiny_model("bert")


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), np.float64("nan")])
def test_negative_nan_or_infinite_weight_decay_is_refused(model, builder, bad):
    # NaN passes `weight_decay < 0`; AdamW would then turn every decayed weight into NaN.
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        BUILDERS[builder](model, bad)


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("bad", ["0.01", None, True])
def test_weight_decay_of_the_wrong_type_is_a_type_error(model, builder, bad):
    with pytest.raises(TypeError, match="weight_decay must be >= 0"):
        BUILDERS[builder](model, bad)


@pytest.mark.parametrize("builder", BUILDERS)
def test_numpy_weight_decay_is_accepted_as_a_float(model, builder):
    groups = BUILDERS[builder](model, np.float32(0.25))
    decays = {g["weight_decay"] for g in groups}
    assert decays == {0.25, 0.0} and all(type(d) is float for d in decays)


def test_check_weight_decay():
    assert check_weight_decay(0) == 0.0 and check_weight_decay(np.int64(1)) == 1.0
    assert type(check_weight_decay(np.float64(0.1))) is float


def test_decay_split(model):
    names = {id(p): n for n, p in model.named_parameters()}
    groups = decay_param_groups(model, 0.01)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert all(not is_no_decay(names[id(p)], p) for p in groups[0]["params"])
    assert all(is_no_decay(names[id(p)], p) for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
