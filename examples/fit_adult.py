"""Fit a pipeline on data/adult.csv and save it with joblib.dump: the kind of file
`flask models add` takes. Any fitted pipeline saved this way will do.

    .venv/bin/python examples/fit_adult.py adult.joblib
"""

import sys
from pathlib import Path

import joblib
import pandas as pd
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

DATA = Path(__file__).resolve().parent.parent / "data" / "adult.csv"


def main(out: Path) -> None:
    """Fit scaled numbers and one-hot categories into a logistic regression, and save it."""
    frame = pd.read_csv(DATA)
    X, y = frame.drop(columns=["income"]), frame["income"]
    categories = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    pipeline = make_pipeline(
        make_column_transformer(
            (StandardScaler(), make_column_selector(dtype_include="number")),
            (categories, make_column_selector(dtype_exclude="number")),
        ),
        LogisticRegression(max_iter=1000),
    )
    joblib.dump(pipeline.fit(X, y), out)
    print(f"saved a fitted pipeline to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "adult.joblib"))
