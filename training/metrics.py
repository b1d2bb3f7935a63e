"""Held-out quality of a fitted classifier."""

import numpy as np
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score


def binary_holdout_metrics(y_true, proba: np.ndarray, positive_class=1) -> dict:
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
