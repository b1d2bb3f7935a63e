"""The compiled scoring core: converter registry, input columns and the compiled pipeline.

A converter turns one fitted estimator into plain NumPy functions. Transformers become a
`Transform` (a function from a `Frame` or a 2-D array to a 2-D array); final estimators become
a `Head`. Nothing here touches pandas at scoring time: pandas is only consulted, at compile
time, to read the dtypes the model was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline


class NotCompilable(Exception):
    """The pipeline cannot be compiled; the message names the first step that stopped it."""


class Frame:
    """Input columns by name, typed as `LoadedModel.frame` types them: the DataFrame stand-in.

    Transformers that sklearn hands a DataFrame receive a Frame; they turn it into the array
    sklearn would have made from that DataFrame with `as_matrix`.
    """

    __slots__ = ("arrays", "n_rows", "names", "positions")

    def __init__(self, names: Sequence[str], arrays: Sequence[np.ndarray], n_rows: int):
        self.names = tuple(names)
        self.arrays = tuple(arrays)
        self.n_rows = n_rows
        self.positions = {name: i for i, name in enumerate(self.names)}

    def take(self, keys: Sequence[str | int]) -> Frame:
        """The columns named (str) or at positions (int) in `keys`, in that order."""
        picked = [self.positions[k] if isinstance(k, str) else int(k) for k in keys]
        return Frame([self.names[i] for i in picked], [self.arrays[i] for i in picked], self.n_rows)

    def matrix(self) -> np.ndarray:
        """The 2-D array sklearn's check_array makes of these columns.

        That is NumPy's result_type of the column dtypes (bool with float32 stays float32,
        anything with strings is object), not pandas' own to_numpy, which would make bool
        next to numbers an object array: the values, once numeric, are the same either way.
        """
        arrays = self.arrays
        if not arrays:
            return np.empty((self.n_rows, 0))
        if any(a.ndim != 1 for a in arrays):
            return np.column_stack(arrays)
        # What column_stack makes of 1-D columns (a new array, concatenate's result_type),
        # without its per-column reshaping: a third of a single row's scoring time.
        out = np.empty((self.n_rows, len(arrays)), dtype=np.result_type(*arrays))
        for j, column in enumerate(arrays):
            out[:, j] = column
        return out


Transform = Callable[[Any], np.ndarray]


def as_matrix(X: Frame | np.ndarray) -> np.ndarray:
    """The 2-D array a transformer works on, whether it was handed a Frame or an array."""
    return X.matrix() if isinstance(X, Frame) else X


def as_float(X: Frame | np.ndarray) -> np.ndarray:
    """X as sklearn's FLOAT_DTYPES validation leaves it: float32/float64 kept, else float64."""
    X = as_matrix(X)
    if X.dtype == np.float64 or X.dtype == np.float32:
        return X
    return X.astype(np.float64)


def n_rows(X: Frame | np.ndarray) -> int:
    """The number of rows of a Frame or an array."""
    return X.n_rows if isinstance(X, Frame) else X.shape[0]


@dataclass(frozen=True)
class Head:
    """A final estimator as NumPy functions of its feature matrix.

    Classifiers set `classes` and `proba` (n, n_classes); regressors set `predict`.

    A head whose NumPy functions lose to the estimator's own code on large batches (trees)
    also sets `batch_from` and `batch_proba` or `batch_predict`: from `batch_from` rows on,
    the matrix goes to those instead (the ESTIMATOR path). Verification checks both paths.
    """

    classes: np.ndarray | None = None
    proba: Callable[[np.ndarray], np.ndarray] | None = None
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    batch_from: int | None = None
    batch_proba: Callable[[np.ndarray], np.ndarray] | None = None
    batch_predict: Callable[[np.ndarray], np.ndarray] | None = None


# The two ways a compiled pipeline scores a matrix: its own NumPy head, or, for large batches
# of a head that sets batch_from, the fitted estimator's own method.
COMPILED, ESTIMATOR = "compiled", "estimator"


_TRANSFORMERS: dict[type, Callable[[Any], Transform]] = {}
_ESTIMATORS: dict[type, Callable[[Any], Head]] = {}


def register_transformer(cls: type) -> Callable[[Callable[[Any], Transform]], Any]:
    """Decorator: register `converter(fitted) -> Transform` for exactly the class `cls`."""

    def decorate(converter: Callable[[Any], Transform]) -> Callable[[Any], Transform]:
        _TRANSFORMERS[cls] = converter
        return converter

    return decorate


def register_estimator(cls: type) -> Callable[[Callable[[Any], Head]], Any]:
    """Decorator: register `converter(fitted) -> Head` for exactly the final estimator `cls`."""

    def decorate(converter: Callable[[Any], Head]) -> Callable[[Any], Head]:
        _ESTIMATORS[cls] = converter
        return converter

    return decorate


def is_passthrough(step: Any) -> bool:
    """Pipelines accept None and 'passthrough' as steps that change nothing."""
    return step is None or (isinstance(step, str) and step == "passthrough")


def compile_transformer(step: Any) -> Transform:
    """The Transform for one fitted transformer; NotCompilable names its class otherwise."""
    if is_passthrough(step):
        return _identity
    # Exact class lookup: a subclass may override transform, so it needs its own converter.
    converter = _TRANSFORMERS.get(type(step))
    if converter is None:
        raise NotCompilable(f"no converter for {type(step).__name__}")
    return converter(step)


def compile_estimator(step: Any) -> Head:
    """The Head for one fitted final estimator; NotCompilable names its class otherwise."""
    converter = _ESTIMATORS.get(type(step))
    if converter is None:
        raise NotCompilable(f"no converter for {type(step).__name__}")
    return converter(step)


def _identity(X: Any) -> Any:
    return X


def flatten_steps(estimator: Any) -> list[Any]:
    """The estimators a (possibly nested) Pipeline applies in order, passthrough steps left out."""
    if not isinstance(estimator, Pipeline):
        return [estimator]
    steps: list[Any] = []
    for _, step in estimator.steps:
        if not is_passthrough(step):
            steps.extend(flatten_steps(step))
    return steps


def chain(transforms: Sequence[Transform]) -> Transform:
    """One Transform applying `transforms` in order."""
    transforms = tuple(transforms)

    def transform(X: Any) -> Any:
        for step in transforms:
            X = step(X)
        return X

    return transform


def _reader(name: str, dtype: Any) -> Callable[[Sequence[Any]], np.ndarray]:
    """How one input column becomes the array sklearn sees after `LoadedModel.frame`."""
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories.dtype
        if categories.kind in "iufb":
            return _float_reader(np.dtype(np.float64))
        return _object_reader
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f":
            return _float_reader(dtype)
        if dtype.kind in "iu":
            return _strict_reader(name, dtype)
        if dtype.kind == "b":
            return _strict_reader(name, dtype)
        if dtype.kind in "OU":
            return _object_reader
    elif pd.api.types.is_string_dtype(dtype):
        return _object_reader
    elif pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        # Nullable extension dtypes (Int64, Float64, boolean) reach sklearn as float with NaN.
        return _float_reader(np.dtype(np.float64))
    raise NotCompilable(f"no reader for column {name!r} of dtype {dtype}")


def _float_reader(dtype: np.dtype) -> Callable[[Sequence[Any]], np.ndarray]:
    def read(values: Sequence[Any]) -> np.ndarray:
        # NumPy turns None into NaN for float arrays, which is what the frame does too.
        return np.array(values, dtype=dtype)

    return read


def _strict_reader(name: str, dtype: np.dtype) -> Callable[[Sequence[Any]], np.ndarray]:
    def read(values: Sequence[Any]) -> np.ndarray:
        # int64 and bool columns cannot hold a gap; NumPy would silently make None False.
        if any(v is None for v in values):
            raise ValueError(f"column {name!r} ({dtype}) cannot hold a missing value")
        return np.array(values, dtype=dtype)

    return read


def _object_reader(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    # A JSON null must reach the transformers as NaN, exactly as LoadedModel.frame makes it.
    out[:] = [np.nan if v is None else v for v in values]
    return out


class CompiledPipeline:
    """A fitted pipeline as NumPy functions of validated observation dicts.

    Holds no state that scoring changes, so one instance may serve many threads.
    """

    def __init__(
        self,
        columns: Sequence[str],
        readers: Sequence[Callable[[Sequence[Any]], np.ndarray]],
        transform: Transform,
        head: Head,
    ):
        self.columns = tuple(columns)
        self._readers = tuple(readers)
        self._transform = transform
        self.head = head

    @property
    def is_classifier(self) -> bool:
        """Whether the final estimator is a classifier (predict_proba) or a regressor."""
        return self.head.proba is not None

    @property
    def classes_(self) -> np.ndarray | None:
        """The classifier's classes, in predict_proba's column order; None for a regressor."""
        return self.head.classes

    def frame(self, rows: Sequence[dict[str, Any]]) -> Frame:
        """The rows as typed input columns."""
        arrays = [
            read([row[name] for row in rows])
            for name, read in zip(self.columns, self._readers, strict=True)
        ]
        return Frame(self.columns, arrays, len(rows))

    def columns_frame(self, columns: Mapping[str, Sequence[Any]]) -> Frame:
        """Validated values given column by column, as typed input columns: the same arrays
        `frame` makes of the same values given row by row."""
        arrays = [
            read(columns[name]) for name, read in zip(self.columns, self._readers, strict=True)
        ]
        return Frame(self.columns, arrays, len(arrays[0]) if arrays else 0)

    def features(self, rows: Sequence[dict[str, Any]] | Frame) -> np.ndarray:
        """The matrix the final estimator receives for these rows (dicts, or a Frame)."""
        frame = rows if isinstance(rows, Frame) else self.frame(rows)
        return as_matrix(self._transform(frame))

    @property
    def paths(self) -> tuple[str, ...]:
        """The paths this pipeline may take: COMPILED, and ESTIMATOR when the head has one."""
        return (COMPILED,) if self.head.batch_from is None else (COMPILED, ESTIMATOR)

    def path_for(self, n_rows: int) -> str:
        """The path a batch of `n_rows` takes: fixed by the row count alone."""
        batch_from = self.head.batch_from
        return ESTIMATOR if batch_from is not None and n_rows >= batch_from else COMPILED

    def predict_proba(
        self, rows: Sequence[dict[str, Any]] | Frame, path: str | None = None
    ) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), columns in `classes_` order.

        `rows` are validated dicts or a Frame (`columns_frame`). `path` forces COMPILED or
        ESTIMATOR (verification checks both); by default the batch size chooses (`path_for`).
        """
        head = self.head
        if head.proba is None or head.classes is None:
            raise TypeError("this pipeline is a regressor: use predict")
        n = n_rows(rows) if isinstance(rows, Frame) else len(rows)
        if not n:
            return np.empty((0, len(head.classes)))
        score = head.batch_proba if self._path(n, path) == ESTIMATOR else head.proba
        if score is None:
            raise TypeError("this pipeline has no estimator path for probabilities")
        return score(self.features(rows))

    def predict(
        self, rows: Sequence[dict[str, Any]] | Frame, path: str | None = None
    ) -> np.ndarray:
        """Regression values, as the pipeline's predict returns them; `rows` and `path` as in
        predict_proba."""
        head = self.head
        if head.predict is None:
            raise TypeError("this pipeline is a classifier: use predict_proba")
        n = n_rows(rows) if isinstance(rows, Frame) else len(rows)
        score = head.batch_predict if self._path(n, path) == ESTIMATOR else head.predict
        if score is None:
            raise TypeError("this pipeline has no estimator path for values")
        return score(self.features(rows))

    def _path(self, n_rows: int, path: str | None) -> str:
        if path is None:
            return self.path_for(n_rows)
        if path not in self.paths:
            raise ValueError(f"no {path!r} path here; this pipeline has {self.paths}")
        return path


def compile_pipeline(pipeline: Any, columns: list[str], dtypes: dict[str, Any]) -> CompiledPipeline:
    """Compile a fitted pipeline over `columns` typed by `dtypes`.

    Raises NotCompilable naming the first unsupported step (class name), e.g.
    'no converter for MyScaler'.
    """
    missing = [c for c in columns if c not in dtypes]
    if missing:
        raise NotCompilable(f"no dtype for columns {missing}")
    fitted_on = getattr(pipeline, "feature_names_in_", None)
    if fitted_on is not None and list(fitted_on) != list(columns):
        raise NotCompilable(f"columns {list(columns)} differ from the fitted {list(fitted_on)}")
    steps = flatten_steps(pipeline)
    if not steps:
        raise NotCompilable("the pipeline has no steps")
    transforms = [compile_transformer(step) for step in steps[:-1]]
    head = compile_estimator(steps[-1])
    readers = [_reader(c, dtypes[c]) for c in columns]
    return CompiledPipeline(columns, readers, chain(transforms), head)
