"""The statistics behind A/B verdicts and shadow comparisons: intervals, tests, sample sizes.

Pure functions of counts and sums, so that the database does the summing. Every interval is a
95% interval and every test two-sided at ALPHA unless said otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05
POWER = 0.8
_Z = float(stats.norm.ppf(1 - ALPHA / 2))


@dataclass(frozen=True)
class Estimate:
    """A metric with its 95% confidence interval; all None when there is no data, or when it
    cannot be measured (then `reason` says why)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, float | str | None]:
        """As the API shows it; `reason` only when the metric is null for one."""
        out: dict[str, float | str | None] = {
            "value": self.value,
            "low": self.low,
            "high": self.high,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    def finite(self) -> Estimate:
        """This estimate with nothing JSON cannot carry: a value that is not a finite number
        becomes None with a reason, a non-finite bound drops the interval."""
        if self.value is not None and not math.isfinite(self.value):
            return Estimate(None, reason=f"not a finite number ({self.value})")
        bounds = (self.low, self.high)
        if any(b is not None and not math.isfinite(b) for b in bounds):
            return Estimate(self.value, reason=self.reason)
        return self


# An estimate of nothing: no rows to measure (not a verdict, not a drift class).
NO_ESTIMATE = Estimate(None)


def proportion(successes: int, n: int) -> Estimate:
    """A rate with its Wilson score interval, which stays inside [0, 1] for small n."""
    if n <= 0:
        return NO_ESTIMATE
    interval = stats.binomtest(successes, n).proportion_ci(1 - ALPHA, method="wilson")
    return Estimate(successes / n, float(interval.low), float(interval.high))


def mean(
    total: float,
    total_of_squares: float,
    n: int,
    bounds: tuple[float | None, float | None] = (None, None),
) -> Estimate:
    """A mean of per-row values with a normal-approximation interval (sample variance),
    clipped to `bounds`, the range the values can take: at small n the normal interval of a
    loss that cannot be negative would otherwise reach below 0. No library computes this from
    sums (scipy wants the rows), and the database only sends sums."""
    if n <= 0:
        return NO_ESTIMATE
    average = total / n
    if n == 1:
        return Estimate(average)
    variance = max(0.0, (total_of_squares - n * average * average) / (n - 1))
    half = _Z * math.sqrt(variance / n)
    low, high = average - half, average + half
    floor, ceiling = bounds
    if floor is not None:
        low = max(floor, low)
    if ceiling is not None:
        high = min(ceiling, high)
    return Estimate(average, low, high)


def roc_auc(auc: float | None, positives: int, negatives: int) -> Estimate:
    """ROC AUC with the Hanley & McNeil (1982) standard error."""
    if auc is None or positives <= 0 or negatives <= 0:
        return NO_ESTIMATE
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    half = _Z * math.sqrt(max(0.0, variance))
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half))


@dataclass(frozen=True)
class TestResult:
    """A two-sample test: its name, statistic, p-value, and which sample did better."""

    test: str
    statistic: float | None
    p_value: float | None
    better: str | None  # "A", "B" or None when not significant

    @property
    def significant(self) -> bool:
        """Whether the p-value is below ALPHA."""
        return self.p_value is not None and self.p_value < ALPHA


def two_proportions(successes_a: int, n_a: int, successes_b: int, n_b: int) -> TestResult:
    """Pooled two-proportion z-test of A's rate against B's (higher is better)."""
    # Written out: scipy has no z-test of two counts (statsmodels would, for this alone).
    name = "two-proportion z-test on accuracy"
    if n_a <= 0 or n_b <= 0:
        return TestResult(name, None, None, None)
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return TestResult(name, 0.0, 1.0, None)
    z = (p_b - p_a) / spread
    p_value = float(2 * stats.norm.sf(abs(z)))
    better = ("B" if z > 0 else "A") if p_value < ALPHA else None
    return TestResult(name, z, p_value, better)


def welch(
    mean_a: float, variance_a: float, n_a: int, mean_b: float, variance_b: float, n_b: int
) -> TestResult:
    """Welch's t-test on per-row losses (lower is better), e.g. absolute errors."""
    name = "Welch's t-test on absolute error"
    if n_a < 2 or n_b < 2:
        return TestResult(name, None, None, None)
    se2 = variance_a / n_a + variance_b / n_b
    if se2 == 0:
        return TestResult(name, 0.0, 1.0 if mean_a == mean_b else 0.0, None)
    result = stats.ttest_ind_from_stats(
        mean_a, math.sqrt(variance_a), n_a, mean_b, math.sqrt(variance_b), n_b, equal_var=False
    )
    t, p_value = float(result.statistic), float(result.pvalue)
    better = ("B" if t > 0 else "A") if p_value < ALPHA else None
    return TestResult(name, t, p_value, better)


def mcnemar(only_a_right: int, only_b_right: int) -> TestResult:
    """Exact McNemar test on paired rows: of the rows where exactly one of two models was
    right, is the split further from 50/50 than chance allows? Exact (binomial) at every n."""
    name = "McNemar's exact test"
    discordant = only_a_right + only_b_right
    if discordant == 0:
        return TestResult(name, 0.0, 1.0, None)
    p_value = float(stats.binomtest(only_b_right, discordant, 0.5).pvalue)
    better = ("B" if only_b_right > only_a_right else "A") if p_value < ALPHA else None
    return TestResult(name, float(only_b_right - only_a_right), p_value, better)


def paired_t(differences_total: float, differences_squares: float, n: int) -> TestResult:
    """Paired t-test on per-row differences (A's loss minus B's; positive means B better)."""
    # Written out: scipy's ttest_rel wants the rows, and the database only sends sums.
    name = "paired t-test on absolute error"
    if n < 2:
        return TestResult(name, None, None, None)
    average = differences_total / n
    variance = max(0.0, (differences_squares - n * average * average) / (n - 1))
    if variance == 0:
        return TestResult(name, 0.0, 1.0 if average == 0 else 0.0, None)
    t = average / math.sqrt(variance / n)
    p_value = float(2 * stats.t.sf(abs(t), n - 1))
    better = ("B" if t > 0 else "A") if p_value < ALPHA else None
    return TestResult(name, t, p_value, better)


def rows_per_arm_for_proportions(p_a: float, p_b: float) -> int | None:
    """Labelled rows each arm needs for the z-test to detect the difference between p_a and
    p_b with POWER at ALPHA; None when they are equal (no finite sample would)."""
    if p_a == p_b:
        return None
    z_power = float(stats.norm.ppf(POWER))
    pooled = (p_a + p_b) / 2
    numerator = _Z * math.sqrt(2 * pooled * (1 - pooled)) + z_power * math.sqrt(
        p_a * (1 - p_a) + p_b * (1 - p_b)
    )
    return math.ceil((numerator / (p_a - p_b)) ** 2)


def rows_per_arm_for_means(mean_a: float, mean_b: float, variance: float) -> int | None:
    """Rows each arm needs to detect a difference of means at POWER and ALPHA, with a common
    per-row variance; None when the means are equal."""
    if mean_a == mean_b:
        return None
    z_power = float(stats.norm.ppf(POWER))
    return math.ceil(2 * variance * ((_Z + z_power) / (mean_a - mean_b)) ** 2)
