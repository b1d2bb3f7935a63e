"""The gate a retrained candidate passes before it is registered: candidate against
production on exactly the same held-out rows.

Figures: accuracy, ROC AUC and log loss for classifiers; MAE and RMSE for regressions. The
decision rests on one paired test, the one shadows use (`serving.reports.statistics`): McNemar's
exact test on the rows where exactly one of the two was right (classifiers), a paired t-test
on absolute errors (regressions), two-sided at ALPHA. The candidate **passes unless that test
finds production significantly better** (p < ALPHA with production ahead): a candidate no
worse than production goes on to a shadow or an A/B test, where live traffic decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from serving.model.runtime import LoadedModel
from serving.reports import statistics

CANDIDATE_BETTER, NO_DIFFERENCE, CANDIDATE_WORSE = (
    "candidate better",
    "no significant difference",
    "candidate worse",
)
# Relative to the largest target: per-row absolute errors closer than this are equal.
TIE_TOLERANCE = 1e-9
RULE = (
    "passes unless the paired test finds production significantly better "
    f"(two-sided, alpha {statistics.ALPHA})"
)


@dataclass(frozen=True)
class Gate:
    """The gate's verdict and the figures behind it."""

    passed: bool
    verdict: str
    test: str
    statistic: float | None
    p_value: float | None
    rows: int
    candidate: dict[str, float | None]
    production: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        """As model.json's lineage and the API record it."""
        return {
            "passed": self.passed,
            "verdict": self.verdict,
            "rule": RULE,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "alpha": statistics.ALPHA,
            "holdout_rows": self.rows,
            "candidate": self.candidate,
            "production": self.production,
        }

    def summary(self) -> str:
        """One line: the verdict, the test, and the headline metric of each side."""
        name = "accuracy" if "accuracy" in self.candidate else "mae"
        p = "n/a" if self.p_value is None else f"{self.p_value:.3g}"
        return (
            f"{self.verdict} on {self.rows} held-out rows ({self.test}, p = {p}; {name} "
            f"{_number(self.candidate.get(name))} against production's "
            f"{_number(self.production.get(name))})"
        )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def judge(production: LoadedModel, candidate: Any, X: pd.DataFrame, truths: list[Any]) -> Gate:
    """Score the held-out rows `X` (truths `truths`) with both pipelines and call the gate."""
    if production.task == "regression":
        return _regression(production, candidate, X, truths)
    return _classifier(production, candidate, X, truths)


def _classifier(production: LoadedModel, candidate: Any, X: pd.DataFrame, truths: list) -> Gate:
    classes = production.classes
    theirs = production.pipeline.predict_proba(X)
    mine = _aligned(candidate, X, classes)
    truth = np.array([classes.index(t) for t in truths])
    right_theirs = theirs.argmax(axis=1) == truth
    right_mine = mine.argmax(axis=1) == truth
    only_production = int(np.sum(right_theirs & ~right_mine))
    only_candidate = int(np.sum(right_mine & ~right_theirs))
    test = statistics.mcnemar(only_production, only_candidate)
    return _gate(
        test,
        len(truths),
        _class_metrics(mine, truth, production),
        _class_metrics(theirs, truth, production),
    )


def _aligned(candidate: Any, X: pd.DataFrame, classes: list[Any]) -> np.ndarray:
    """The candidate's probabilities in production's class order (0 for a class it never
    saw in fitting)."""
    proba = candidate.predict_proba(X)
    out = np.zeros((len(X), len(classes)))
    for j, label in enumerate(candidate.classes_):
        plain = label.item() if isinstance(label, np.generic) else label
        out[:, classes.index(plain)] = proba[:, j]
    return out


def _class_metrics(
    proba: np.ndarray, truth: np.ndarray, production: LoadedModel
) -> dict[str, float | None]:
    labels = list(range(len(production.classes)))
    present = len(set(truth.tolist())) > 1
    if production.positive_class is not None:
        positive = production.classes.index(production.positive_class)
        auc = float(skm.roc_auc_score(truth == positive, proba[:, positive])) if present else None
    else:
        auc = (
            float(skm.roc_auc_score(truth, proba, multi_class="ovr", labels=labels))
            if len(set(truth.tolist())) == len(labels)
            else None
        )
    return {
        "accuracy": float(np.mean(proba.argmax(axis=1) == truth)),
        "roc_auc": auc,
        "log_loss": float(skm.log_loss(truth, np.clip(proba, 0, 1), labels=labels)),
    }


def _regression(production: LoadedModel, candidate: Any, X: pd.DataFrame, truths: list) -> Gate:
    truth = np.asarray(truths, dtype=np.float64)
    theirs = np.abs(np.asarray(production.pipeline.predict(X), dtype=np.float64) - truth)
    mine = np.abs(np.asarray(candidate.predict(X), dtype=np.float64) - truth)
    differences = theirs - mine  # positive: the candidate erred less
    # Two fits of the same exact relation differ only by float rounding, and which way it rounds
    # depends on the BLAS kernel of the machine: a t-test on that noise would call one of them
    # significantly better. Differences within TIE_TOLERANCE of the targets' scale are ties.
    scale = max(1.0, float(np.abs(truth).max())) if len(truth) else 1.0
    differences[np.abs(differences) <= TIE_TOLERANCE * scale] = 0.0
    test = statistics.paired_t(
        float(differences.sum()), float((differences * differences).sum()), len(truth)
    )
    return _gate(test, len(truth), _errors(mine), _errors(theirs))


def _errors(absolute: np.ndarray) -> dict[str, float | None]:
    return {
        "mae": float(absolute.mean()),
        "rmse": float(math.sqrt(float((absolute * absolute).mean()))),
    }


def _gate(
    test: statistics.TestResult,
    rows: int,
    candidate: dict[str, float | None],
    production: dict[str, float | None],
) -> Gate:
    # In statistics' terms, A is production and B the candidate.
    if test.significant and test.better == "A":
        verdict = CANDIDATE_WORSE
    elif test.significant and test.better == "B":
        verdict = CANDIDATE_BETTER
    else:
        verdict = NO_DIFFERENCE
    return Gate(
        passed=verdict != CANDIDATE_WORSE,
        verdict=verdict,
        test=test.test,
        statistic=test.statistic,
        p_value=test.p_value,
        rows=rows,
        candidate=candidate,
        production=production,
    )
