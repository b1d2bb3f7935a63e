"""The `heights` endpoint: average weight from height, a linear regression.

Fifteen rows, one per inch from 58 to 72, are all the data there is, so the model is fitted
on every row and its metrics are labelled "training", not "holdout". A straight line fitted
on 58-72 inches says nothing trustworthy outside that span, hence `"out_of_range": "reject"`.
"""

from pathlib import Path

import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from serving.model import artifacts, fit_metrics, profile
from training import data

NAME = "heights"
VERSION = "1"
TARGET = "weight"
COLUMNS = ["height"]
DATA_PATH = data.DATA_DIR / "heights_weights.csv"


def load(path: Path | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Return the height column (int64, as read) and the weight target."""
    frame = data.read_csv(path or DATA_PATH)
    return frame[COLUMNS], frame[TARGET]


def build_pipeline() -> Pipeline:
    """Return the unfitted pipeline; a one-step Pipeline so every model folder has one shape."""
    return Pipeline([("regressor", LinearRegression())])


def train(models_dir: Path) -> dict:
    """Fit on all rows, write models_dir/heights/1/ and return its model.json."""
    X, y = load()
    pipeline = build_pipeline().fit(X, y)
    metadata = {
        "name": NAME,
        "endpoint": NAME,
        "version": VERSION,
        "initial_status": "production",
        "task": "regression",
        "target": TARGET,
        "out_of_range": "reject",
        "metrics": {"training": fit_metrics.regression_metrics(y, pipeline.predict(X))},
        "library_versions": artifacts.library_versions(),
        "training": {
            "data": data.describe_path(DATA_PATH),
            "data_sha256": artifacts.sha256_file(DATA_PATH),
            "rows": len(X),
            "learner": "LinearRegression",
            "trained_by": f"python -m training {NAME}",
        },
        "profile": profile.profile_frame(X),
    }
    return artifacts.write_model(Path(models_dir) / NAME / VERSION, pipeline, X, metadata)
