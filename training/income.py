"""The `income` endpoint: UCI Adult census, income over or under $50K a year, in two versions.

Version 1 is a random forest (starts in production), version 2 extra trees (starts in
testing). Both share one preprocessing and one set of tree limits, so comparing the two
versions compares the learners alone.
"""

from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from custom_transformers import CategoricalImputer
from serving.model import artifacts, fit_metrics, profile
from training import data

NAME = "income"
TARGET = "income"
POSITIVE_CLASS = ">50K"
TRAIN_PATH = data.DATA_DIR / "adult.csv"
TEST_PATH = data.DATA_DIR / "adult_test.csv"
RANDOM_STATE = 42
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = [
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
]
# Bounded trees keep each pickle near 3.5 MB (a budget of 8 MB per model folder in git);
# n_jobs=1 because the pickle must not depend on the machine's core count.
TREE_LIMITS = {
    "n_estimators": 60,
    "max_depth": 14,
    "min_samples_leaf": 5,
    "random_state": RANDOM_STATE,
    "n_jobs": 1,
}
# version -> (learner, the status a fresh deployment gives it)
VERSIONS = {
    "1": (RandomForestClassifier, "production"),
    "2": (ExtraTreesClassifier, "testing"),
}


def load(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Return the fourteen input columns, dtypes as pandas reads them, and the income label."""
    frame = data.read_csv(path)
    return frame.drop(columns=[TARGET]), frame[TARGET]


def build_pipeline(classifier) -> Pipeline:
    """Return the unfitted preprocessing followed by the given classifier.

    No scaler: tree splits do not care about scale, and an identity step would only cost
    time at every prediction.
    """
    preprocess = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), NUMERIC),
            (
                "categorical",
                make_pipeline(CategoricalImputer(), OneHotEncoder(handle_unknown="ignore")),
                CATEGORICAL,
            ),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def train(models_dir: Path) -> dict[str, dict]:
    """Fit every version on adult.csv, score it on adult_test.csv and write
    models_dir/income/<version>/; return each version's model.json by version."""
    X, y = load(TRAIN_PATH)
    X_test, y_test = load(TEST_PATH)
    reference = profile.profile_frame(X)
    written = {}
    for version, (learner, initial_status) in VERSIONS.items():
        pipeline = build_pipeline(learner(**TREE_LIMITS)).fit(X, y)
        positive = list(pipeline.classes_).index(POSITIVE_CLASS)
        proba = pipeline.predict_proba(X_test)[:, positive]
        holdout = fit_metrics.binary_holdout_metrics(y_test, proba, POSITIVE_CLASS)
        metadata = {
            "name": NAME,
            "endpoint": NAME,
            "version": version,
            "initial_status": initial_status,
            "task": "binary_classification",
            "target": TARGET,
            "class_labels": [str(label) for label in pipeline.classes_],
            "positive_class": POSITIVE_CLASS,
            "metrics": {"holdout": holdout},
            "library_versions": artifacts.library_versions(),
            "training": {
                "data": data.describe_path(TRAIN_PATH),
                "data_sha256": artifacts.sha256_file(TRAIN_PATH),
                "rows": len(X),
                "holdout": data.describe_path(TEST_PATH),
                "holdout_sha256": artifacts.sha256_file(TEST_PATH),
                "holdout_rows": len(X_test),
                "learner": learner.__name__,
                "learner_params": TREE_LIMITS,
                "random_state": RANDOM_STATE,
                "trained_by": f"python -m training {NAME}",
            },
            "profile": reference,
        }
        folder = Path(models_dir) / NAME / version
        written[version] = artifacts.write_model(folder, pipeline, X, metadata)
    return written
