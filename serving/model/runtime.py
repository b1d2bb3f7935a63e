"""A model on disk: loaded, checked at load, and scored. Knows nothing of HTTP or databases."""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.exceptions import InconsistentVersionWarning, NotFittedError
from sklearn.utils.validation import check_is_fitted

from serving.compiled import (
    ESTIMATOR,
    CompiledPipeline,
    NotCompilable,
    compile_pipeline,
    reference_rows,
    typical_row,
    verify,
)
from serving.errors import InvalidInput, detail
from serving.model import dtypes_pickle, skops_format
from serving.model.digests import MODEL_FILES, DigestError, check_folder_pins, sha256_hex
from serving.model.schema import STRING, InputSchema

logger = logging.getLogger(__name__)

PIPELINE_FILE, DTYPES_FILE, COLUMNS_FILE, METADATA_FILE = (
    "pipeline.pickle",
    "dtypes.pickle",
    "columns.json",
    "model.json",
)
# The safe alternative to pipeline.pickle: loaded by skops.io, which runs no arbitrary code.
SKOPS_FILE = "pipeline.skops"


# The bar: compiled probabilities within 1e-6 of the pipeline's, or no fast path.
FAST_PATH_TOLERANCE = 1e-6


class ModelLoadError(Exception):
    """A model folder that cannot be served; the message names the folder and the problem."""


# The longest piece of a pipeline's own message an error repeats (sklearn's NaN message runs
# to 600 characters of advice meant for whoever trains the model).
_PROBLEM_CHARS = 200


# A pipeline's message about missing values (NaN from numpy, pandas.NA from the nullable
# Int64 and Float64 dtypes): the fields holding nulls are then the ones to name. Whole words,
# so that "Found unknown categories ['banana']" or "columns are missing" do not blame a null.
_ABOUT_MISSING = re.compile(r"(?i:\bnan\b|\bpandas\.na\b|\bnull\b|missing values?)|\bNA\b")


def about_missing(exc: BaseException) -> bool:
    """Whether a pipeline's exception says it cannot take missing values."""
    return _ABOUT_MISSING.search(str(exc)) is not None


def refuses(exc: BaseException) -> bool:
    """Whether a pipeline's exception is about the values it was given (NaN where no imputer
    waits, an unknown category, a text its encoder cannot take) rather than about the model.

    ValueError and TypeError are what scikit-learn raises for inputs it cannot take. A model
    broken for every input raises anything else (AttributeError for a version mismatch,
    ImportError, MemoryError) and stays a 500, except NotFittedError, which is a ValueError
    too but says the model itself cannot score. `LoadedModel.refuses_input` asks one thing
    more: that the model still scores a typical row, so that a model broken for every input
    with a ValueError (its columns not the pipeline's, say) is not taken for a client's error.
    """
    return isinstance(exc, ValueError | TypeError) and not isinstance(exc, NotFittedError)


def _problem(exc: BaseException) -> str:
    """The first line of a pipeline's message, no traceback: its first sentence when the
    line is long, cut to _PROBLEM_CHARS at most."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        return type(exc).__name__
    if len(first) > _PROBLEM_CHARS and ". " in first:
        first = first[: first.index(". ") + 1]
    return first if len(first) <= _PROBLEM_CHARS else first[: _PROBLEM_CHARS - 3] + "..."


def missing(value: Any) -> bool:
    """Whether a validated value is a null: None, or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


class Score(NamedTuple):
    """What the model said about one observation.

    A named tuple rather than a frozen dataclass: as immutable, and a batch makes one per row,
    which costs about half as much this way (10,000 rows: 2.7 against 5.6 ms; 100,000 with
    100,000 validated rows alive: 44 against 77 ms).
    """

    proba: float | None
    label: Any
    # Multi-class models: every class's probability, keyed by the label's text.
    probabilities: dict[str, float] | None = None
    # Regression models: the predicted value (also in `label`).
    value: float | None = None


@dataclass(frozen=True)
class Scores:
    """What the model said about many observations, column by column."""

    # Binary: the positive class's probability; multi-class: the predicted class's; else None.
    proba: np.ndarray | None
    # The predicted label of each row (a regression's value).
    labels: list[Any]
    # Multi-class: every class's probability, one column per class in `names` order.
    probabilities: np.ndarray | None
    # Regression: the predicted values.
    values: np.ndarray | None
    names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self) -> list[Score]:
        """One Score per row, as `LoadedModel.predict` answers."""
        if self.values is not None:
            return [Score(None, v, value=v) for v in self.values.tolist()]
        assert self.proba is not None
        if self.probabilities is None:
            return list(map(Score, self.proba.tolist(), self.labels))
        names = self.names or []
        return [
            Score(p, label, dict(zip(names, row, strict=True)))
            for p, label, row in zip(
                self.proba.tolist(), self.labels, self.probabilities.tolist(), strict=True
            )
        ]


def _plain(value: Any) -> Any:
    """A numpy scalar as the JSON-friendly Python value."""
    return value.item() if isinstance(value, np.generic) else value


class LoadedModel:
    """One model version: pipeline, input schema and metadata, checked when loaded."""

    def __init__(
        self,
        folder: Path,
        pipeline: Any,
        schema: InputSchema,
        metadata: dict[str, Any],
        endpoint: str,
        version: str,
        where: str | None = None,
    ):
        self.folder = folder
        where = where or f"model folder {folder}"
        self.pipeline = pipeline
        self.schema = schema
        self.metadata = metadata
        self.endpoint = endpoint
        self.version = version
        self.dtypes = {f.name: f.dtype for f in schema.fields}
        self.classes = [_plain(c) for c in getattr(pipeline, "classes_", [])]
        if self.classes and not hasattr(pipeline, "predict_proba"):
            raise ModelLoadError(f"{where}: {PIPELINE_FILE} is a classifier without predict_proba")
        binary = len(self.classes) == 2
        self.task = metadata.get("task") or (
            "regression"
            if not self.classes
            else "binary_classification"
            if binary
            else "multiclass_classification"
        )
        positive = metadata.get("positive_class", self.classes[-1] if binary else None)
        if binary and positive not in self.classes:
            raise ModelLoadError(
                f"{where}: {METADATA_FILE} positive_class {positive!r} is not one of the "
                f"pipeline's classes {self.classes}"
            )
        self.positive_class = positive if binary else None
        self._positive_index = self.classes.index(positive) if binary else None
        self.compiled: CompiledPipeline | None = None
        self.fast_path: dict[str, Any] = {"enabled": False, "reason": "not compiled"}
        self.rejects_surprises = metadata.get("out_of_range") == "reject"
        # The sha256 of each file the model was built from, as read (set by `load`).
        self.digests: dict[str, str] = {}

    @classmethod
    def load(
        cls,
        folder: Path,
        endpoint: str,
        version: str | None = None,
        compile: bool = True,
        check_digests: Callable[[str, Mapping[str, str]], None] | None = None,
    ) -> LoadedModel:
        """Load and check a model folder; a broken folder raises ModelLoadError with a sentence.

        Every file's sha256 is checked against model.json's pins, then `check_digests(version,
        digests)` (the operator's pins from outside the folder; it raises DigestError to
        refuse), before anything is unpickled. With `compile`, also try the NumPy fast path and
        keep it only if it reproduces the pipeline on reference rows within FAST_PATH_TOLERANCE.
        """
        folder = Path(folder)
        where = f"model folder {folder}"
        pipeline_file = _pipeline_file(where, [n for n in MODEL_FILES if (folder / n).is_file()])
        # A missing dtypes or columns file is named by from_files. Each file is read once:
        # the bytes whose digest is checked are the bytes parsed, so a file swapped between
        # the check and the load cannot slip through.
        contents = {
            name: (folder / name).read_bytes()
            for name in (pipeline_file, DTYPES_FILE, COLUMNS_FILE, METADATA_FILE)
            if (folder / name).is_file()
        }
        return cls.from_files(contents, where, folder, endpoint, version, compile, check_digests)

    @classmethod
    def from_files(
        cls,
        contents: Mapping[str, bytes],
        where: str,
        folder: Path,
        endpoint: str,
        version: str | None = None,
        compile: bool = True,
        check_digests: Callable[[str, Mapping[str, str]], None] | None = None,
    ) -> LoadedModel:
        """Load and check a model from its files' bytes (by file name), as `load` does a
        folder's; `where` starts every error's sentence ("model folder models/income/2",
        "published version income/3"), `folder` is where the model came from."""
        pipeline_file = _pipeline_file(where, list(contents))
        for name in (DTYPES_FILE, COLUMNS_FILE):
            if name not in contents:
                raise ModelLoadError(f"{where}: {name} is missing")
        metadata = _read_metadata(where, contents.get(METADATA_FILE))
        version = str(version or metadata.get("version") or "1")
        digests = {name: sha256_hex(data) for name, data in contents.items()}
        try:
            check_folder_pins(where, metadata, digests, pipeline_file)
            if check_digests is not None:
                check_digests(version, digests)
        except DigestError as exc:
            raise ModelLoadError(str(exc)) from exc
        pipeline = _read_pipeline(where, pipeline_file, contents[pipeline_file], metadata)
        columns = _read_columns(where, contents[COLUMNS_FILE])
        dtypes = _read_dtypes(where, contents[DTYPES_FILE])
        _check_pipeline(where, pipeline, columns, pipeline_file)
        unknown = [name for name in dtypes if name not in columns]
        if unknown:
            raise ModelLoadError(
                f"{where}: {DTYPES_FILE} names columns not in {COLUMNS_FILE}: {unknown}"
            )
        try:
            schema = InputSchema.from_columns(columns, dtypes, metadata.get("profile"))
        except ValueError as exc:
            raise ModelLoadError(f"{where}: {exc}") from exc
        model = cls(folder, pipeline, schema, metadata, endpoint, version, where)
        model.digests = digests
        if compile:
            model.enable_fast_path()
        logger.info(
            "loaded model",
            extra={
                "endpoint": endpoint,
                "model_version": model.version,
                "folder": str(folder),
                "fast_path": model.fast_path,
            },
        )
        return model

    def enable_fast_path(self) -> None:
        """Compile the pipeline to NumPy and verify it; on any doubt keep the pipeline."""
        try:
            compiled = compile_pipeline(self.pipeline, self.columns, self.dtypes)
            rows = reference_rows(
                self.columns, self.dtypes, self.metadata.get("profile"), self.pipeline
            )
            difference = verify(compiled, self.pipeline, self.frame, rows)
        except NotCompilable as exc:
            self._fall_back(str(exc))
            return
        except Exception as exc:  # a converter bug must cost speed, never availability
            self._fall_back(f"compiling failed: {type(exc).__name__}: {exc}")
            return
        if not difference <= FAST_PATH_TOLERANCE:
            self._fall_back(
                f"compiled output differs from the pipeline by {difference:.3g} "
                f"(tolerance {FAST_PATH_TOLERANCE:g})"
            )
            return
        self.compiled = compiled
        self.fast_path = {
            "enabled": True,
            "max_abs_difference": float(difference),
            "reference_rows": len(rows),
        }
        if ESTIMATOR in compiled.paths:
            # Verified too: from this many rows on, the estimator's own code scores the matrix.
            self.fast_path["estimator_from_rows"] = compiled.head.batch_from

    def _fall_back(self, reason: str) -> None:
        self.compiled = None
        self.fast_path = {"enabled": False, "reason": reason}
        logger.warning(
            "fast path disabled, scoring with the pipeline itself",
            extra={"endpoint": self.endpoint, "model_version": self.version, "reason": reason},
        )

    @property
    def columns(self) -> list[str]:
        """Input columns in model order."""
        return self.schema.columns

    def frame(self, observations: Sequence[dict[str, Any]]) -> pd.DataFrame:
        """Validated observations as the DataFrame the pipeline was trained on."""
        return self.columns_frame(
            {name: [obs[name] for obs in observations] for name in self.columns}
        )

    def columns_frame(self, columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
        """Validated values, one sequence per input column, as the training DataFrame."""
        names = self.columns
        frame = pd.DataFrame({name: columns[name] for name in names}, columns=names)
        for f in self.schema.fields:
            column = frame[f.name]
            if f.kind == STRING:
                # A JSON null must reach the imputers as NaN, as a missing CSV cell does;
                # None in an object column is a value to them, not a gap.
                column = column.astype(object).where(column.notna(), np.nan)
            frame[f.name] = column.astype(f.dtype)
        return frame

    def predict(self, observations: Sequence[dict[str, Any]]) -> list[Score]:
        """Score validated observations in one vectorised call."""
        if not observations:
            return []
        if self.classes:
            if self.compiled is not None:
                probabilities = self.compiled.predict_proba(observations)
            else:
                probabilities = self.pipeline.predict_proba(self.frame(observations))
            return self._scores(probabilities).rows()
        if self.compiled is not None:
            values = self.compiled.predict(observations)
        else:
            values = self.pipeline.predict(self.frame(observations))
        return self._scores(values).rows()

    def predict_columns(self, columns: Mapping[str, Sequence[Any]]) -> Scores:
        """Score many validated observations given column by column: with the fast path when
        there is one (which, for large batches of a forest, hands the compiled matrix to the
        estimator's own code), else with the pipeline itself on one DataFrame."""
        typed = None if self.compiled is None else self.compiled.columns_frame(columns)
        if self.compiled is not None and typed is not None and typed.n_rows:
            if self.classes:
                return self._scores(self.compiled.predict_proba(typed))
            return self._scores(self.compiled.predict(typed))
        frame = self.columns_frame(columns)
        if not len(frame):
            return self._scores(np.empty((0, len(self.classes))) if self.classes else np.empty(0))
        if self.classes:
            return self._scores(self.pipeline.predict_proba(frame))
        return self._scores(self.pipeline.predict(frame))

    def _scores(self, output: np.ndarray) -> Scores:
        """Class probabilities (classifiers) or values (regressions) as Scores."""
        if not self.classes:
            values = np.asarray(output, dtype=np.float64)
            return Scores(None, values.tolist(), None, values)
        best = output.argmax(axis=1)
        labels = list(map(self.classes.__getitem__, best.tolist()))
        if self._positive_index is not None:
            return Scores(output[:, self._positive_index], labels, None, None)
        chosen = output[np.arange(len(best)), best]
        return Scores(chosen, labels, output, None, [str(c) for c in self.classes])

    def truth(self, value: Any) -> Any:
        """The ground truth a caller meant: a class label matched exactly or by its text, or a
        finite number for a regression; None when it is neither."""
        if isinstance(value, (bool, list | dict)):
            return None
        if not self.classes:
            finite = isinstance(value, int | float) and math.isfinite(value)
            return float(value) if finite else None
        for label in self.classes:
            if value == label and not isinstance(label, bool):
                return label
        for label in self.classes:
            if str(value) == str(label):
                return label
        return None

    def refuses_input(self, exc: BaseException) -> bool:
        """Whether the pipeline raised `exc` because of the rows it was given (`refuses`),
        and not because the model is broken: it still scores a typical row built from its
        training profile (asked once, at the first refusal; a broken model is logged at
        ERROR and its errors stay 500s)."""
        return refuses(exc) and self._scores_typical is not False

    @functools.cached_property
    def typical(self) -> dict[str, Any] | None:
        """A typical row of the training data (`compiled.typical_row`), built at the first
        use; None when there is nothing to build it from."""
        try:
            return typical_row(
                self.columns, self.dtypes, self.metadata.get("profile"), self.pipeline
            )
        except Exception:  # nothing to build it from, whatever the reason
            return None

    @functools.cached_property
    def _scores_typical(self) -> bool | None:
        """Whether the pipeline scores `typical` (None: there is none to ask with, so a
        refusal stands as the input's); asked only once an input is refused."""
        if self.typical is None:
            return None
        try:
            frame = self.frame([self.typical])
            if self.classes:
                self.pipeline.predict_proba(frame)
            else:
                self.pipeline.predict(frame)
        except Exception as exc:
            logger.error(
                "model %s/%s cannot score even a typical row of its training data: it is "
                "broken for every input, and its errors are answered 500",
                self.endpoint,
                self.version,
                extra={"problem": _problem(exc)},
            )
            return False
        return True

    def refusal(
        self, observation: Mapping[str, Any], exc: BaseException, log: bool = True
    ) -> InvalidInput:
        """The 422 for one validated observation this model's pipeline raised `exc` on (see
        `refuses`): it names the fields holding nulls when the pipeline's message is about
        missing values, else the whole observation, and repeats the pipeline's own message,
        trimmed. With `log`, logged at WARNING (with the request id, as every line written
        while a request is handled); a batch logs its refusals once instead."""
        problem = _problem(exc)
        fields = [name for name in self.columns if missing(observation.get(name))]
        if fields and about_missing(exc):
            details = [
                detail(f"observation.{name}", f"null, which this model cannot take: {problem}")
                for name in fields
            ]
        else:
            details = [detail("observation", f"the model cannot score it: {problem}")]
        if log:
            logger.warning(
                "model %s/%s refused an observation: %s: %s",
                self.endpoint,
                self.version,
                type(exc).__name__,
                problem,
                extra={"fields": [d["field"] for d in details]},
            )
        names = ", ".join(d["field"] for d in details)
        return InvalidInput(
            f"The model cannot score this observation ({names}): {problem.rstrip('.')}. "
            "Nothing was stored.",
            details,
        )

    def info(self) -> dict[str, Any]:
        """What the API shows about this model."""
        return {
            "endpoint": self.endpoint,
            "version": self.version,
            "task": self.task,
            "classes": self.classes,
            "positive_class": self.positive_class,
            "inputs": self.schema.describe(),
            "fast_path": self.fast_path,
        }


def _pipeline_file(where: str, names: Sequence[str]) -> str:
    """pipeline.pickle or pipeline.skops, whichever of `names` the model has; never both."""
    present = [name for name in (PIPELINE_FILE, SKOPS_FILE) if name in names]
    if not present:
        raise ModelLoadError(f"{where}: {PIPELINE_FILE} is missing (or {SKOPS_FILE})")
    if len(present) > 1:
        raise ModelLoadError(f"{where}: holds both {PIPELINE_FILE} and {SKOPS_FILE}; keep one")
    return present[0]


def _read_json(where: str, name: str, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{where}: {name} is not valid JSON: {exc}") from exc


def _read_metadata(where: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    metadata = _read_json(where, METADATA_FILE, data)
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{where}: {METADATA_FILE} must hold a JSON object")
    return metadata


def _read_pipeline(where: str, name: str, data: bytes, metadata: Mapping[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            if name == SKOPS_FILE:
                return skops_format.loads(data, metadata)
            return joblib.load(io.BytesIO(data))
        except skops_format.SkopsRefused as exc:
            raise ModelLoadError(f"{where}: {name} is refused: {exc}") from exc
        except InconsistentVersionWarning as exc:
            raise ModelLoadError(
                f"{where}: {name} was saved with scikit-learn "
                f"{exc.original_sklearn_version}, this server runs {sklearn.__version__}; "
                f"retrain it or pin scikit-learn=={exc.original_sklearn_version}"
            ) from exc
        except (ModuleNotFoundError, AttributeError) as exc:
            raise ModelLoadError(
                f"{where}: {name} needs code that cannot be imported "
                f"({exc}); custom transformers belong in the custom_transformers package"
            ) from exc
        except Exception as exc:
            raise ModelLoadError(f"{where}: {name} cannot be unpickled: {exc}") from exc


def _read_columns(where: str, data: bytes) -> list[str]:
    columns = _read_json(where, COLUMNS_FILE, data)
    if (
        not isinstance(columns, list)
        or not columns
        or not all(isinstance(c, str) for c in columns)
        or len(set(columns)) != len(columns)
    ):
        raise ModelLoadError(f"{where}: {COLUMNS_FILE} must be a non-empty list of distinct names")
    return columns


def _read_dtypes(where: str, data: bytes) -> dict[str, Any]:
    try:
        dtypes = dtypes_pickle.loads(data)
    except dtypes_pickle.RefusedGlobal as exc:
        raise ModelLoadError(
            f"{where}: {DTYPES_FILE} is refused: it names {exc.qualified}, and a "
            "dtypes pickle may only name the pandas and numpy types of a Series of dtypes"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"{where}: {DTYPES_FILE} cannot be unpickled: {exc}") from exc
    if isinstance(dtypes, pd.Series):
        return dict(dtypes.items())
    if isinstance(dtypes, dict):
        return {name: pd.api.types.pandas_dtype(d) for name, d in dtypes.items()}
    raise ModelLoadError(f"{where}: {DTYPES_FILE} must hold a pandas Series or a dict of dtypes")


def _check_pipeline(where: str, pipeline: Any, columns: list[str], name: str) -> None:
    if not hasattr(pipeline, "predict"):
        raise ModelLoadError(f"{where}: {name} holds no estimator")
    try:
        check_is_fitted(pipeline)
    except NotFittedError as exc:
        raise ModelLoadError(f"{where}: {name} is not fitted") from exc
    trained_on = getattr(pipeline, "feature_names_in_", None)
    if trained_on is not None and list(trained_on) != list(columns):
        raise ModelLoadError(
            f"{where}: {COLUMNS_FILE} {columns} disagrees with the columns the "
            f"pipeline was fitted on {list(trained_on)}"
        )
