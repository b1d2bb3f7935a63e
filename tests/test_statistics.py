"""The statistics behind verdicts, against textbook values and scipy's own tests."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from serving.decisions.experiments import A_BETTER, B_BETTER, NO_LABELLED_DATA, NOT_YET, verdict
from serving.reports import statistics
from serving.reports.quality import Measurement


def test_wilson_interval_matches_the_textbook_value():
    # 81 of 263: the worked example in Newcombe (1998), 0.2553 to 0.3662.
    estimate = statistics.proportion(81, 263)
    assert estimate.value == pytest.approx(81 / 263)
    assert (round(estimate.low, 4), round(estimate.high, 4)) == (0.2553, 0.3662)
    assert statistics.proportion(0, 0) == statistics.NO_ESTIMATE


def test_two_proportion_z_test_agrees_with_a_chi_square_test():
    result = statistics.two_proportions(140, 200, 160, 200)
    table = [[140, 60], [160, 40]]
    chi2, p, _, _ = sps.chi2_contingency(table, correction=False)
    assert result.statistic == pytest.approx(math.sqrt(chi2))
    assert result.p_value == pytest.approx(p)
    assert result.better == "B"


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    result = statistics.mcnemar(only_a_right=5, only_b_right=20)
    assert result.p_value == pytest.approx(sps.binomtest(20, 25, 0.5).pvalue)
    assert result.better == "B"
    assert statistics.mcnemar(0, 0).p_value == 1.0
    assert statistics.mcnemar(10, 11).better is None


def test_sample_size_for_seventy_against_eighty_percent():
    # The standard formula gives 294 per arm for 0.70 vs 0.80 at alpha 0.05 and power 0.8.
    assert statistics.rows_per_arm_for_proportions(0.7, 0.8) == 294
    assert statistics.rows_per_arm_for_proportions(0.7, 0.7) is None


def _arm(correct: int, labelled: int) -> Measurement:
    return Measurement(
        "binary_classification",
        predictions=labelled,
        labelled=labelled,
        correct=correct,
        estimates={"accuracy": statistics.proportion(correct, labelled)},
    )


def test_a_known_difference_is_significant_and_picks_the_better_arm():
    assert verdict(_arm(1400, 2000), _arm(1600, 2000))["result"] == B_BETTER
    assert verdict(_arm(1600, 2000), _arm(1400, 2000))["result"] == A_BETTER


def test_equal_arms_are_not_significant():
    answer = verdict(_arm(1500, 2000), _arm(1500, 2000))
    assert answer["result"] == NOT_YET
    assert answer["p_value"] == pytest.approx(1.0)
    assert answer["required_per_arm"] is None


def test_a_tiny_sample_is_never_called_whatever_its_p_value():
    assert verdict(_arm(2, 20), _arm(20, 20))["result"] == NOT_YET


def test_an_empty_arm_says_no_labelled_data_without_dividing_by_zero():
    answer = verdict(_arm(0, 0), _arm(15, 20))
    assert answer["result"] == NO_LABELLED_DATA
    assert answer["p_value"] is None
