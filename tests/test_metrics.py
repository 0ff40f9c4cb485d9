"""Metric code against small tables worked out by hand."""

import math

import numpy as np
import pytest

from animeface import metrics


def test_auroc_counts_pairs_and_ties_half():
    # pairs (pos > neg): 0.9 beats both, 0.8 beats both, 0.4 beats 0.3 only -> 5 of 6
    assert metrics.auroc([0.9, 0.8, 0.4], [0.5, 0.3]) == pytest.approx(5 / 6)
    # 0.5 vs 0.5 is a tie (half), 0.5 vs 0.2 a win -> 1.5 of 2
    assert metrics.auroc([0.5], [0.5, 0.2]) == pytest.approx(0.75)
    assert metrics.auroc([1.0, 2.0], [3.0]) == 0.0
    assert math.isnan(metrics.auroc([], [1.0]))


def test_roc_curve_walks_down_the_thresholds():
    fpr, tpr = metrics.roc_curve([0.9, 0.4], [0.5])
    # thresholds 0.9, 0.5, 0.4 after the (0, 0) start
    assert fpr.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0]


def test_macro_f1_by_hand():
    # a: tp 2, fp 0, fn 1 -> P 1, R 2/3, F1 0.8;  b: tp 1, fp 1, fn 0 -> P 1/2, R 1, F1 2/3
    truth, pred = ["a", "a", "a", "b"], ["a", "a", "b", "b"]
    table = metrics.per_class_prf(truth, pred, ["a", "b"])
    assert table["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert table["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert metrics.macro_f1(truth, pred, ["a", "b"]) == pytest.approx((0.8 + 2 / 3) / 2)


def test_macro_f1_unknown_answers_and_strangers_count_against_classes():
    # a: tp 1 (row 0), fp 1 (row 3), fn 1 (row 1 answered unknown) -> F1 1/2
    # b: tp 1 (row 2), fp 1 (row 4, a stranger named b), fn 1 (row 3) -> F1 1/2
    truth = ["a", "a", "b", "b", None]
    pred = ["a", None, "b", "a", "b"]
    assert metrics.macro_f1(truth, pred, ["a", "b"]) == pytest.approx(0.5)
    assert metrics.macro_f1(truth, pred, ["a", "b"]) == metrics.macro_f1_codes(
        metrics.encode(truth, ["a", "b"]), metrics.encode(pred, ["a", "b"]), 2)


def test_multilabel_micro_precision_recall_f1():
    # true positives 1 + 1 + 0 = 2; 3 names given; 4 names true
    truth = [{"a", "b"}, {"a"}, {"c"}]
    pred = [{"a"}, {"a", "c"}, set()]
    assert metrics.multilabel_prf(truth, pred) == pytest.approx(
        {"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7})


def test_accuracy_coverage_answers_the_most_confident_first():
    # order by score: 0.9 right, 0.7 right, 0.4 wrong, 0.2 wrong
    coverage, accuracy = metrics.accuracy_coverage([0.9, 0.2, 0.7, 0.4], [True, False, True, False])
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert accuracy == pytest.approx([1.0, 1.0, 2 / 3, 0.5])


def test_bootstrap_ci_contains_the_estimate_and_repeats_with_its_seed():
    values = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 3, float)
    groups = np.repeat([0, 1, 2], 10)

    def mean(idx):
        return values[idx].mean()

    lo, hi = metrics.bootstrap_ci(mean, groups, resamples=1000, seed=7)
    assert lo <= values.mean() <= hi
    assert 0.0 <= lo < hi <= 1.0
    assert metrics.bootstrap_ci(mean, groups, resamples=1000, seed=7) == (lo, hi)
    assert metrics.bootstrap_samples(mean, groups, 50, seed=7) == metrics.bootstrap_samples(mean, groups, 50, seed=7)
    assert metrics.bootstrap_samples(mean, groups, 50, seed=7) != metrics.bootstrap_samples(mean, groups, 50, seed=8)


def test_bootstrap_keeps_each_groups_size():
    groups = np.array([0, 0, 0, 1, 2, 2])
    sizes = metrics.bootstrap_samples(lambda idx: np.bincount(groups[idx], minlength=3).tolist(), groups, 20)
    assert all(s == [3, 1, 2] for s in sizes)


def test_percentile_interval_drops_nans():
    assert metrics.percentile_interval([float("nan")] * 3) is None
    assert metrics.percentile_interval([1.0, float("nan"), 1.0]) == (1.0, 1.0)
