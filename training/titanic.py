"""The bundled Titanic survival model: data, pipeline and training run."""

from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from custom_transformers import CabinDeck, CategoricalImputer, FamilySize
from serving.model import artifacts, fit_metrics, profile
from training import data

NAME = "titanic"
VERSION = "1"
TARGET = "Survived"
COLUMNS = ["Age", "Cabin", "Embarked", "Fare", "Parch", "Pclass", "Sex", "SibSp"]
DATA_PATH = data.DATA_DIR / "titanic.csv"
RANDOM_STATE = 42
HOLDOUT_SIZE = 0.2


def load(data_path: Path | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Return the eight input columns and the target, as pandas reads them from the CSV."""
    frame = data.read_csv(data_path or DATA_PATH)
    return frame[COLUMNS], frame[TARGET]


def split(X: pd.DataFrame, y: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Return X_train, X_holdout, y_train, y_holdout from a fixed stratified 80/20 split."""
    return train_test_split(X, y, test_size=HOLDOUT_SIZE, stratify=y, random_state=RANDOM_STATE)


def build_pipeline() -> Pipeline:
    """Return the unfitted preprocessing and logistic regression pipeline."""
    one_hot = {"handle_unknown": "ignore"}
    preprocess = ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                ["Age", "Fare", "Pclass", "SibSp", "Parch"],
            ),
            (
                "family",
                make_pipeline(FamilySize(), SimpleImputer(strategy="median"), StandardScaler()),
                ["SibSp", "Parch"],
            ),
            ("deck", make_pipeline(CabinDeck(), OneHotEncoder(**one_hot)), ["Cabin"]),
            (
                "categorical",
                make_pipeline(CategoricalImputer(), OneHotEncoder(**one_hot)),
                ["Sex", "Embarked"],
            ),
        ]
    )
    classifier = LogisticRegression(max_iter=1000, random_state=RANDOM_STATE)
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def train(out_dir: Path, data_path: Path | None = None) -> dict:
    """Fit the Titanic pipeline, write its model folder into out_dir and return model.json."""
    data_path = Path(data_path or DATA_PATH)
    X, y = load(data_path)
    X_train, X_holdout, y_train, y_holdout = split(X, y)
    pipeline = build_pipeline().fit(X_train, y_train)
    positive = list(pipeline.classes_).index(1)
    holdout_proba = pipeline.predict_proba(X_holdout)[:, positive]
    metadata = {
        "name": NAME,
        "version": VERSION,
        "task": "binary_classification",
        "target": TARGET,
        "class_labels": [int(label) for label in pipeline.classes_],
        "positive_class": 1,
        "metrics": {"holdout": fit_metrics.binary_holdout_metrics(y_holdout, holdout_proba)},
        "library_versions": artifacts.library_versions(),
        "training": {
            "data": data.describe_path(data_path),
            "data_sha256": artifacts.sha256_file(data_path),
            "rows": len(X),
            "train_rows": len(X_train),
            "holdout_rows": len(X_holdout),
            "random_state": RANDOM_STATE,
            "trained_by": f"python -m training {NAME}",
        },
        "profile": profile.profile_frame(X_train),
    }
    return artifacts.write_model(out_dir, pipeline, X, metadata)
