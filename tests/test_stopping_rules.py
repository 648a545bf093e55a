"""ftcourse.course.stopping_rules: where HF's callback and ours stop, on sequences whose answer is known by hand."""
import itertools
import warnings

from ftcourse.course.stopping_rules import ftcourse_first_stop, hf_first_stop


def test_a_steady_gain_below_the_threshold_stops_hf_but_not_ours():
    # HF compares with the latest best (it moves on every gain); ours with the best at the last counted improvement
    creeping = [0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86]
    assert hf_first_stop(creeping, 2, 0.015) == 2
    assert ftcourse_first_stop(creeping, 2, 0.015) is None


def test_a_nan_stops_ours_at_once_and_counts_as_no_improvement_for_hf():
    diverged = [0.80, 0.82, float("nan"), 0.83]
    assert hf_first_stop(diverged, 3) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ftcourse_first_stop(diverged, 3) == 2
    assert caught
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ftcourse_first_stop(diverged, 3, quiet=True) == 2


def test_without_a_threshold_the_two_rules_agree_on_every_short_sequence():
    for patience in (1, 2):
        for values in itertools.product((0.80, 0.81, 0.82), repeat=5):
            assert hf_first_stop(values, patience) == ftcourse_first_stop(values, patience), (values, patience)


def test_plain_patience_by_hand():
    assert hf_first_stop([0.5, 0.6, 0.6, 0.6], 2) == 3 == ftcourse_first_stop([0.5, 0.6, 0.6, 0.6], 2)
    assert hf_first_stop([0.5, 0.6, 0.7], 1) is None and ftcourse_first_stop([0.5, 0.6, 0.7], 1) is None
