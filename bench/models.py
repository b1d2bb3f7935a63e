"""The two Titanic model folders the benchmark serves: the bundled logistic one and a forest."""

from __future__ import annotations

from pathlib import Path

import joblib
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from serving.model import artifacts, fit_metrics, profile
from training import data, titanic

LOGREG, FOREST = "logreg", "forest"
MODELS = (LOGREG, FOREST)
FOREST_TREES = 100


def train(name: str, out_dir: Path) -> Path:
    """Train the named model into out_dir/<name> and return that folder."""
    folder = Path(out_dir) / name
    if name == LOGREG:
        titanic.train(folder)
    elif name == FOREST:
        train_forest(folder)
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    return folder


def load_pipeline(folder: Path) -> Pipeline:
    """The pipeline as the servers load it: from the pickle, not from the training process."""
    return joblib.load(Path(folder) / artifacts.PIPELINE_FILE)


def train_forest(out_dir: Path) -> dict:
    """Fit the bundled preprocessing with a random forest on the bundled split; write its folder.

    Same data, split and preprocessing as the logistic model, so the two differ only in the cost
    of the final estimator. Returns the model.json written.
    """
    X, y = titanic.load()
    X_train, X_holdout, y_train, y_holdout = titanic.split(X, y)
    pipeline = titanic.build_pipeline()
    forest = RandomForestClassifier(n_estimators=FOREST_TREES, random_state=titanic.RANDOM_STATE)
    pipeline.steps[-1] = (pipeline.steps[-1][0], forest)
    pipeline.fit(X_train, y_train)
    positive = list(pipeline.classes_).index(1)
    holdout_proba = pipeline.predict_proba(X_holdout)[:, positive]
    metadata = {
        "name": f"{titanic.NAME}-forest",
        "version": "1",
        "task": "binary_classification",
        "target": titanic.TARGET,
        "class_labels": [int(label) for label in pipeline.classes_],
        "positive_class": 1,
        "metrics": {"holdout": fit_metrics.binary_holdout_metrics(y_holdout, holdout_proba)},
        "library_versions": artifacts.library_versions(),
        "training": {
            "data": data.describe_path(titanic.DATA_PATH),
            "data_sha256": artifacts.sha256_file(titanic.DATA_PATH),
            "rows": len(X),
            "train_rows": len(X_train),
            "holdout_rows": len(X_holdout),
            "random_state": titanic.RANDOM_STATE,
            "trained_by": "python -m bench",
        },
        # The service checks its fast path against this profile, as for the bundled model.
        "profile": profile.profile_frame(X_train),
    }
    return artifacts.write_model(out_dir, pipeline, X, metadata)
