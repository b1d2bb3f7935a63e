"""Converters for linear final estimators: logistic regression and linear regressors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge

from serving.compiled.core import Head, as_float, register_estimator


def _decision(
    coef: np.ndarray, intercept: np.ndarray, squeeze: bool
) -> Callable[[np.ndarray], np.ndarray]:
    """X @ coef.T + intercept; classifiers squeeze a single score column to 1-D, as sklearn."""
    coef_t = coef.T
    one_output = squeeze and coef.ndim == 2 and coef.shape[0] == 1

    def decision(X: np.ndarray) -> np.ndarray:
        scores = as_float(X) @ coef_t + intercept
        return scores.reshape(-1) if one_output and scores.ndim == 2 else scores

    return decision


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, without the overflow warning exp(-z) gives for very negative z."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum first as sklearn's softmax is."""
    shifted = z - z.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


@register_estimator(LogisticRegression)
def _logistic_regression(est: LogisticRegression) -> Head:
    # Copies: the compiled model is a snapshot, unaffected by later changes to the estimator.
    decision = _decision(np.array(est.coef_, dtype=np.float64), np.array(est.intercept_), True)
    classes = np.array(est.classes_)
    if len(classes) <= 2:
        # sklearn 1.9: binary probabilities are the sigmoid of the decision function.
        def proba(X: np.ndarray) -> np.ndarray:
            p = sigmoid(decision(X))
            return np.column_stack((1.0 - p, p))

    else:

        def proba(X: np.ndarray) -> np.ndarray:
            return softmax(decision(X))

    return Head(classes=classes, proba=proba)


def _linear_regressor(est: Any) -> Head:
    decision = _decision(np.array(est.coef_, dtype=np.float64), np.array(est.intercept_), False)
    return Head(predict=decision)


for _cls in (LinearRegression, Ridge, Lasso, ElasticNet):
    register_estimator(_cls)(_linear_regressor)
