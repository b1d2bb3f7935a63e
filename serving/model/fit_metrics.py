"""Quality metrics recorded in model.json: binary and multi-class classifiers, regressions."""

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)


def binary_holdout_metrics(y_true: Any, proba: np.ndarray, positive_class: Any = 1) -> dict:
    """Return n, accuracy, ROC AUC, log loss and Brier score for positive-class probabilities."""
    y_positive = np.asarray(y_true) == positive_class
    proba = np.asarray(proba, dtype=np.float64)
    return {
        "n": len(y_positive),
        "accuracy": float(accuracy_score(y_positive, proba >= 0.5)),
        "roc_auc": float(roc_auc_score(y_positive, proba)),
        "log_loss": float(log_loss(y_positive, proba, labels=[False, True])),
        "brier_score": float(brier_score_loss(y_positive, proba)),
    }


def multiclass_holdout_metrics(y_true: Any, proba: np.ndarray, classes: Sequence[Any]) -> dict:
    """Return n, accuracy and log loss of class probabilities (one column per class, in
    `classes` order, as predict_proba gives them)."""
    labels = list(classes)
    proba = np.asarray(proba, dtype=np.float64)
    predicted = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
    return {
        "n": len(proba),
        "accuracy": float(accuracy_score(np.asarray(y_true, dtype=object), predicted)),
        "log_loss": float(log_loss(y_true, proba, labels=labels)),
    }


def regression_metrics(y_true: Any, y_pred: Any) -> dict:
    """Return n, MAE, RMSE and R² of predicted against true values.

    Plain floats (not numpy scalars) so that json.dumps writes them as it writes the rest.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return {
        "n": len(y_true),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "r2": float(r2_score(y_true, y_pred)),
    }
