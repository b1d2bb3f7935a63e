"""dtypes.pickle as the service writes it: pandas' own dtypes only, so a folder trained where
pyarrow is installed loads through the restricted unpickler, and where pyarrow is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from serving import package
from serving.model import artifacts, dtypes_pickle
from serving.model.packaging import PackagingError
from tests.conftest import REPO_ROOT, make_app

pa = pytest.importorskip("pyarrow")

COLOURS = ["red", "blue", "green"]
ARROW_TEXT = pd.StringDtype("pyarrow", na_value=np.nan)
PYTHON_TEXT = pd.StringDtype("python", na_value=np.nan)


def arrow_frame(rows: int = 60) -> pd.DataFrame:
    """A training frame as pandas 3 reads one where pyarrow is installed, plus Arrow columns."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "colour": pd.Categorical(
                rng.choice(COLOURS, rows), categories=pd.Index(COLOURS, dtype=ARROW_TEXT)
            ),
            "size": pd.Categorical(
                rng.choice(["S", "M", "L"], rows), categories=["S", "M", "L"], ordered=True
            ),
            "grade": pd.Categorical(pd.array(rng.integers(1, 4, rows), dtype="int64[pyarrow]")),
            "count": pd.array(rng.integers(0, 10, rows), dtype="int64[pyarrow]"),
            "weight": pd.array(rng.normal(size=rows), dtype="float64[pyarrow]"),
            "flag": pd.array(rng.integers(0, 2, rows).astype(bool), dtype="bool[pyarrow]"),
            "note": pd.array(rng.choice(["a", "b"], rows), dtype=pd.ArrowDtype(pa.string())),
            "city": pd.array(rng.choice(["x", "y"], rows), dtype=ARROW_TEXT),
        },
        columns=pd.Index(
            ["colour", "size", "grade", "count", "weight", "flag", "note", "city"],
            dtype=ARROW_TEXT,
        ),
    )


def python_frame(rows: int = 60) -> pd.DataFrame:
    """The same frame in pandas' own dtypes and storage, as read where pyarrow is not."""
    arrow = arrow_frame(rows)
    return pd.DataFrame(
        {
            "colour": pd.Categorical(
                arrow["colour"].astype(object), categories=pd.Index(COLOURS, dtype=PYTHON_TEXT)
            ),
            "size": pd.Categorical(
                arrow["size"].astype(object),
                categories=pd.Index(["S", "M", "L"], dtype=PYTHON_TEXT),
                ordered=True,
            ),
            "grade": pd.Categorical(arrow["grade"].astype(object).astype("Int64")),
            "count": arrow["count"].astype("Int64"),
            "weight": arrow["weight"].astype("Float64"),
            "flag": arrow["flag"].astype("boolean"),
            "note": arrow["note"].astype(pd.StringDtype("python", na_value=pd.NA)),
            "city": arrow["city"].astype(PYTHON_TEXT),
        },
        columns=pd.Index(list(arrow.columns), dtype=PYTHON_TEXT),
    )


def written_dtypes(folder: Path, frame: pd.DataFrame) -> bytes:
    """dtypes.pickle as write_model (publishing, training, packaging) writes it."""
    artifacts.write_model(folder, LogisticRegression(), frame, {"name": "t"})
    return (folder / "dtypes.pickle").read_bytes()


EXPECTED = {
    "colour": pd.CategoricalDtype(pd.Index(COLOURS, dtype=PYTHON_TEXT), ordered=False),
    "size": pd.CategoricalDtype(pd.Index(["S", "M", "L"], dtype=PYTHON_TEXT), ordered=True),
    "grade": pd.CategoricalDtype(pd.Index([1, 2, 3])),
    "count": pd.Int64Dtype(),
    "weight": pd.Float64Dtype(),
    "flag": pd.BooleanDtype(),
    "note": pd.StringDtype("python", na_value=pd.NA),
    "city": PYTHON_TEXT,
}


def test_categorical_and_arrow_columns_load_through_the_restricted_unpickler(tmp_path: Path):
    data = written_dtypes(tmp_path, arrow_frame())
    assert b"pyarrow" not in data and b"Arrow" not in data
    loaded = dtypes_pickle.loads(data)
    assert dict(loaded.items()) == EXPECTED
    for name in ("colour", "size"):
        categories = loaded[name].categories
        assert categories.dtype == PYTHON_TEXT
        assert list(categories) == list(EXPECTED[name].categories)
    assert loaded["size"].ordered and not loaded["colour"].ordered
    # Categories never hold a missing value: Arrow integers there need no nullable dtype.
    assert loaded["grade"].categories.dtype == np.dtype("int64")


# The same training data as arrow_frame, read and typed where pyarrow is not installed.
WITHOUT_PYARROW = """
import sys
sys.modules["pyarrow"] = None  # as if it were not installed
from pathlib import Path
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from serving.model import artifacts, dtypes_pickle

assert pd.StringDtype().storage == "python"
rows, arrow_folder, folder = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rng = np.random.default_rng(0)
frame = pd.DataFrame({
    "colour": pd.Categorical(rng.choice(["red", "blue", "green"], rows),
                             categories=["red", "blue", "green"]),
    "size": pd.Categorical(rng.choice(["S", "M", "L"], rows), categories=["S", "M", "L"],
                           ordered=True),
    "grade": pd.Categorical(rng.integers(1, 4, rows)),
    "count": pd.array(rng.integers(0, 10, rows), dtype="Int64"),
    "weight": pd.array(rng.normal(size=rows), dtype="Float64"),
    "flag": pd.array(rng.integers(0, 2, rows).astype(bool), dtype="boolean"),
    "note": pd.array(rng.choice(["a", "b"], rows), dtype="string"),
    "city": pd.array(rng.choice(["x", "y"], rows), dtype="str"),
})
artifacts.write_model(folder, LogisticRegression(), frame, {"name": "t"})
dtypes = dtypes_pickle.loads((arrow_folder / "dtypes.pickle").read_bytes())
print({name: str(d) for name, d in dtypes.items()})
print(list(dtypes["size"].categories), dtypes["size"].ordered)
"""


def test_the_same_bytes_are_written_and_loaded_where_pyarrow_is_not_installed(tmp_path: Path):
    arrow = written_dtypes(tmp_path / "arrow", arrow_frame())
    child = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYARROW, "60", tmp_path / "arrow", tmp_path / "python"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert (tmp_path / "python" / "dtypes.pickle").read_bytes() == arrow
    lines = child.stdout.splitlines()
    assert lines[0] == str(
        {
            "colour": "category",
            "size": "category",
            "grade": "category",
            "count": "Int64",
            "weight": "Float64",
            "flag": "boolean",
            "note": "string",
            "city": "str",
        }
    )
    assert lines[1] == "['S', 'M', 'L'] True"


def test_the_bytes_do_not_depend_on_how_the_frame_stored_its_text(tmp_path: Path):
    arrow = written_dtypes(tmp_path / "arrow", arrow_frame())
    python = written_dtypes(tmp_path / "python", python_frame())
    assert arrow == python


@pytest.mark.parametrize(
    "dtype",
    [
        pd.ArrowDtype(pa.timestamp("ns", tz="UTC")),
        pd.ArrowDtype(pa.decimal128(10, 2)),
        pd.ArrowDtype(pa.list_(pa.int64())),
        pd.ArrowDtype(pa.float16()),
        pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string())),
        pd.CategoricalDtype(pd.Index(pd.array([1, 2], dtype="date32[pyarrow]"))),
    ],
    ids=str,
)
def test_an_arrow_type_without_an_equivalent_is_refused_naming_the_column(dtype):
    dtypes = pd.Series({"x": np.dtype("float64"), "when": dtype})
    with pytest.raises(
        artifacts.NotPortable,
        match=r"column 'when' has (categories of )?dtype .*\[pyarrow\], which has no "
        r"equivalent among pandas' own dtypes",
    ):
        artifacts.portable_dtypes(dtypes)


def arrow_pipeline():
    return make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["colour", "size"]),
            (SimpleImputer(), ["count", "weight"]),
        ),
        LogisticRegression(),
    )


def test_package_refuses_an_arrow_column_without_an_equivalent_before_writing(tmp_path: Path):
    frame = arrow_frame()
    frame["when"] = pd.array(
        pd.date_range("2024-01-01", periods=len(frame)), dtype="timestamp[ns][pyarrow]"
    )
    target = (frame["colour"] == "red").astype(int)
    fitted = arrow_pipeline().fit(frame, target)  # never reads `when`
    with pytest.raises(
        PackagingError, match=r"X_train's column 'when' has dtype timestamp\[ns\]\[pyarrow\]"
    ):
        package(fitted, frame, target, endpoint="arrow", models_dir=tmp_path)
    assert not (tmp_path / "arrow").exists()


def test_a_packaged_arrow_frame_scores_and_names_a_value_outside_the_categories(
    database_url, tmp_path: Path
):
    frame = arrow_frame()
    target = ((frame["colour"] == "red") ^ (frame["size"] == "L")).astype(int)
    fitted = arrow_pipeline().fit(frame, target)
    package(fitted, frame, target, endpoint="arrow", models_dir=tmp_path / "models")
    client = make_app(database_url, tmp_path / "models").test_client()

    def predict(i: int, **changes: object):
        observation = {
            "colour": "red",
            "size": "M",
            "grade": 2,
            "count": 3,
            "weight": 0.5,
            "flag": True,
            "note": "a",
            "city": "x",
            **changes,
        }
        body = json.dumps({"id": i, "observation": observation})
        return client.post("/api/v1/arrow/predict", data=body, content_type="application/json")

    answer = predict(1)
    assert answer.status_code == 200, answer.get_json()
    row = pd.DataFrame({"colour": ["red"], "size": ["M"], "count": [3], "weight": [0.5]})
    assert answer.get_json()["proba"] == pytest.approx(fitted.predict_proba(row)[0, 1], abs=1e-9)
    # Arrow columns hold missing values, and so do the nullable dtypes they became.
    assert predict(2, count=None, weight=None, note=None).status_code == 200

    refused = predict(3, colour="purple", grade=7)
    assert refused.status_code == 422
    assert refused.get_json()["details"] == [
        {
            "field": "observation.colour",
            "problem": "expected one of ['red', 'blue', 'green'], got 'purple'",
        },
        {"field": "observation.grade", "problem": "expected one of [1, 2, 3], got 7"},
    ]


def test_a_refused_dtype_writes_no_file_and_leaves_an_earlier_model_as_it_was(tmp_path: Path):
    import pyarrow as pa

    folder = tmp_path / "model"
    frame = python_frame()
    artifacts.write_model(folder, LogisticRegression(), frame, {"name": "t", "version": "1"})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    when = pd.Series(pd.array([None] * len(frame), dtype=pd.ArrowDtype(pa.timestamp("s"))))
    refused = frame.assign(when=when)
    with pytest.raises(artifacts.NotPortable, match="column 'when'"):
        artifacts.write_model(folder, LogisticRegression(), refused, {"name": "t", "version": "2"})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    fresh = tmp_path / "fresh"
    with pytest.raises(artifacts.NotPortable):
        artifacts.write_model(fresh, LogisticRegression(), refused, {"name": "t"})
    assert not fresh.exists() or not any(fresh.iterdir())


def test_categorical_dtypes_pickle_alike_whether_columns_share_one_or_not(tmp_path: Path):
    shared = pd.CategoricalDtype([1, 2, 3])
    values = [1, 2, 3, 1]
    one = pd.DataFrame({"a": pd.Series(values, dtype=shared), "b": pd.Series(values, dtype=shared)})
    two = pd.DataFrame(
        {
            "a": pd.Series(values, dtype=pd.CategoricalDtype([1, 2, 3])),
            "b": pd.Series(values, dtype=pd.CategoricalDtype([1, 2, 3])),
        }
    )
    assert written_dtypes(tmp_path / "one", one) == written_dtypes(tmp_path / "two", two)
