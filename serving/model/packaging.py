"""From a fitted pipeline and its training frame to a complete model folder, in one call.

`package` writes models_dir/<endpoint>/<version>/ with everything the service reads: the
pipeline (pickle or skops), the input dtypes and columns taken from the training frame, and
a model.json holding the training profile (the ranges and categories behind `warnings` and
drift), holdout metrics, task and classes, library versions and the sha256 of every file.

Decisions, where a data scientist would otherwise have to guess:

- `version=None` takes the next free number (the largest numeric version folder plus one);
  an existing folder is never overwritten.
- `initial_status=None` makes the first version of a new endpoint `production`, so the
  endpoint answers at once, and any later version `testing`, so publishing it changes
  nothing until someone promotes it. The database wins either way: a version declaring
  production starts as testing when its endpoint already has one in production.
- Holdout metrics come from X_holdout/y_holdout when given; with y_train alone, metrics on
  the training rows are recorded under "training" (optimistic, and labelled so).
- The folder is written under a dot-name beside its final place (start-up skips dot-folders),
  loaded back with the service's own loader, then renamed into place: a half-written
  folder never appears under its version name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from serving.config import Settings
from serving.decisions.lifecycle import PRODUCTION, STATUSES, TESTING
from serving.model import artifacts, fit_metrics, folders, profile, skops_format
from serving.model.artifacts import Format
from serving.model.folders import FORMATS, OUT_OF_RANGE
from serving.model.registry import valid_name
from serving.model.runtime import LoadedModel, ModelLoadError

# Rows of X_train the pipeline must score before anything is written, and again once the
# folder is loaded back: enough to reach most categories, few enough to cost nothing.
SAMPLE_ROWS = 200
# The reloaded pipeline must give the in-memory one's outputs (both formats store the fitted
# arrays exactly; the tolerance only absorbs a different summation order, never a real change).
RELOAD_TOLERANCE = 1e-9


class PackagingError(ValueError):
    """The pipeline, the data or the destination cannot make a model folder; the message says
    which and why."""


# model.json keys `extra` may not set: how the version is served and checked.
RESERVED_KEYS = (
    "endpoint",
    "version",
    "initial_status",
    "task",
    "class_labels",
    "positive_class",
    "out_of_range",
    "profile",
    "library_versions",
    "sha256",
    "pipeline_sha256",
    "skops_trusted",
)


def package(
    pipeline: Any,
    X_train: pd.DataFrame,
    y_train: Any = None,
    X_holdout: pd.DataFrame | None = None,
    y_holdout: Any = None,
    *,
    endpoint: str,
    version: str | int | None = None,
    models_dir: str | Path | None = None,
    initial_status: str | None = None,
    positive_class: Any = None,
    format: Format = "pickle",
    description: str | None = None,
    out_of_range: str = "warn",
    target: str | None = None,
    training_data: str | Path | None = None,
    holdout_data: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete, checked model folder models_dir/<endpoint>/<version>/ and return it.

    pipeline: a fitted scikit-learn estimator or Pipeline taking X_train's columns.
    X_train: the frame it was fitted on (its dtypes become the service's input types, its
        values the profile behind range warnings and drift). y_train: its labels (optional;
        without a holdout they give "training" metrics).
    X_holdout, y_holdout: rows kept out of training, for the metrics in model.json.
    endpoint, version: where it is served; version None takes the next free number.
    models_dir: default MODELS_DIR (the repository's models/).
    initial_status: testing, staging, production or archived; None: production for a new
        endpoint's first version, testing otherwise.
    positive_class: binary classifiers: the class whose probability `proba` is (default: the
        last of `classes_`, as scikit-learn orders them).
    format: "pickle" (joblib) or "skops" (loads without running arbitrary code; model.json's
        `skops_trusted` lists exactly the types skops reports as untrusted).
    out_of_range: "warn" (default) or "reject" inputs outside the training profile.
    target, description, training_data, holdout_data: recorded in model.json (the data's file
        name and sha256 when it is a file).
    extra: more model.json keys (a retrained version's lineage, say), written over the ones
        computed here, except those the service serves by (RESERVED_KEYS: pass them as
        arguments), which are refused.

    Raises PackagingError, naming the problem, before anything is written when the pipeline
    is not fitted or cannot predict on a sample of X_train, the columns disagree, a column's
    dtype has no portable equivalent (artifacts.portable_dtypes), or the folder exists; and
    without leaving anything behind when the written folder fails to load.
    """
    _check_choice("format", format, FORMATS)
    _check_choice("out_of_range", out_of_range, OUT_OF_RANGE)
    if initial_status is not None:
        _check_choice("initial_status", initial_status, STATUSES)
    if not isinstance(endpoint, str) or not valid_name(endpoint):
        raise PackagingError(
            f"endpoint {endpoint!r} is not a valid name: letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    reserved = sorted(set(extra or {}) & set(RESERVED_KEYS))
    if reserved:
        raise PackagingError(
            f"extra cannot set {reserved}: they are computed from the pipeline and the frame, "
            "or are arguments of package()"
        )
    columns = _checked_frame("X_train", X_train)
    try:
        artifacts.portable_dtypes(X_train.dtypes)
    except artifacts.NotPortable as exc:
        raise PackagingError(f"X_train's {exc}") from exc
    _check_fitted(pipeline, columns)
    sample = X_train.sample(n=min(SAMPLE_ROWS, len(X_train)), random_state=0)
    expected = _outputs(pipeline, sample, "X_train")
    classes = [_plain(c) for c in getattr(pipeline, "classes_", [])]
    task = _task(classes)
    positive = _positive_class(classes, positive_class)
    metrics = _metrics(pipeline, columns, classes, positive, X_train, y_train, X_holdout, y_holdout)

    models_dir = Path(models_dir) if models_dir is not None else Settings.from_env().models_dir
    endpoint_dir = models_dir / endpoint
    version = folders.next_version(endpoint_dir) if version is None else str(version)
    if not valid_name(version):
        raise PackagingError(f"version {version!r} is not a valid name")
    final = endpoint_dir / version
    if final.exists():
        raise PackagingError(
            f"{final} already exists, and a version folder is never overwritten: choose "
            f"another version, or leave version unset for the next free one "
            f"({folders.next_version(endpoint_dir)})"
        )
    if initial_status is None:
        initial_status = TESTING if folders.visible_dirs(endpoint_dir) else PRODUCTION

    metadata: dict[str, Any] = {
        "name": endpoint,
        "endpoint": endpoint,
        "version": version,
        "initial_status": initial_status,
        **({"description": description} if description else {}),
        "task": task,
        "target": target if target is not None else _name_of(y_train),
        **({"class_labels": [str(c) for c in classes]} if classes else {}),
        **({"positive_class": positive} if positive is not None else {}),
        "out_of_range": out_of_range,
        "metrics": metrics,
        "library_versions": artifacts.library_versions(format),
        "training": _provenance(pipeline, X_train, X_holdout, training_data, holdout_data),
        "profile": profile.profile_frame(X_train),
        **(extra or {}),
    }
    return _write(pipeline, X_train, metadata, format, final, sample, expected)


def _write(
    pipeline: Any,
    X_train: pd.DataFrame,
    metadata: dict[str, Any],
    format: Format,
    final: Path,
    sample: pd.DataFrame,
    expected: np.ndarray,
) -> Path:
    """Stage the folder under a dot-name, load it back as the service would, rename it."""
    endpoint_dir = final.parent
    made_endpoint_dir = not endpoint_dir.exists()
    endpoint_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=endpoint_dir))
    try:
        try:
            artifacts.write_model(staging, pipeline, X_train, metadata, format)
        except skops_format.SkopsRefused as exc:
            raise PackagingError(f"cannot save the pipeline with skops: {exc}") from exc
        _check_reloaded(staging, metadata, sample, expected)
        try:
            # Refuses (ENOTEMPTY, EEXIST) if another writer took this version meanwhile.
            os.rename(staging, final)
        except OSError as exc:
            raise PackagingError(f"cannot move the new folder to {final}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made_endpoint_dir and not any(endpoint_dir.iterdir()):
            endpoint_dir.rmdir()
        raise
    return final


def _check_reloaded(
    folder: Path, metadata: Mapping[str, Any], sample: pd.DataFrame, expected: np.ndarray
) -> None:
    """Load the staged folder with the service's loader (digests, dtypes, columns, skops
    trust) and score the sample through it: what is written is what will be served."""
    endpoint, version = str(metadata["endpoint"]), str(metadata["version"])
    try:
        model = LoadedModel.load(folder, endpoint, version, compile=False)
        model.predict_columns({c: sample[c].tolist() for c in model.columns})
    except ModelLoadError as exc:
        raise PackagingError(f"the written folder would not load: {exc}") from exc
    except Exception as exc:
        raise PackagingError(
            f"the written folder loads but cannot score X_train's rows through the service's "
            f"input types: {type(exc).__name__}: {exc}"
        ) from exc
    reloaded = _outputs(model.pipeline, sample, "X_train")
    if not _same(expected, reloaded):
        raise PackagingError(
            "the saved pipeline predicts differently from the one in memory; it may depend on "
            "state that is not saved with it"
        )


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PackagingError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _checked_frame(name: str, frame: Any) -> list[str]:
    if not isinstance(frame, pd.DataFrame):
        raise PackagingError(
            f"{name} must be a pandas DataFrame (its columns and dtypes become the service's "
            f"inputs), got {type(frame).__name__}"
        )
    if frame.empty:
        raise PackagingError(f"{name} has no rows or no columns")
    columns = list(frame.columns)
    if not all(isinstance(c, str) for c in columns):
        raise PackagingError(f"{name}'s column names must all be strings, got {columns}")
    if len(set(columns)) != len(columns):
        raise PackagingError(f"{name} repeats column names: {columns}")
    return columns


def _check_fitted(pipeline: Any, columns: list[str]) -> None:
    if not hasattr(pipeline, "predict"):
        raise PackagingError(f"{type(pipeline).__name__} has no predict method")
    try:
        check_is_fitted(pipeline)
    except NotFittedError as exc:
        raise PackagingError(
            "the pipeline is not fitted: call pipeline.fit(X_train, y_train) first"
        ) from exc
    trained_on = getattr(pipeline, "feature_names_in_", None)
    if trained_on is not None and list(trained_on) != columns:
        fitted = [str(c) for c in trained_on]
        missing = [c for c in fitted if c not in columns]
        extra = [c for c in columns if c not in fitted]
        problems = [f"X_train lacks {missing}"] if missing else []
        if extra:
            problems.append(f"X_train has columns it was not fitted on: {extra}")
        problem = "; ".join(problems) or "the same columns in another order"
        raise PackagingError(
            f"X_train's columns differ from those the pipeline was fitted on ({problem}); "
            f"pass the frame it was fitted on: {fitted}"
        )
    if getattr(pipeline, "classes_", None) is not None and not hasattr(pipeline, "predict_proba"):
        raise PackagingError("the pipeline is a classifier without predict_proba")


def _outputs(pipeline: Any, frame: pd.DataFrame, name: str) -> np.ndarray:
    """Class probabilities of a classifier, predictions otherwise; PackagingError if it fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(pipeline, "classes_", None) is not None:
                return np.asarray(pipeline.predict_proba(frame))
            return np.asarray(pipeline.predict(frame))
    except Exception as exc:
        raise PackagingError(
            f"the pipeline cannot predict on {name}'s rows: {type(exc).__name__}: {exc}"
        ) from exc


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
        return bool(np.allclose(a, b, rtol=0, atol=RELOAD_TOLERANCE, equal_nan=True))
    return bool((a == b).all())


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _task(classes: list[Any]) -> str:
    if not classes:
        return "regression"
    return "binary_classification" if len(classes) == 2 else "multiclass_classification"


def _positive_class(classes: list[Any], wanted: Any) -> Any:
    """The binary classifier's positive class as the pipeline spells it; None otherwise."""
    if len(classes) != 2:
        if wanted is not None:
            raise PackagingError(
                "positive_class applies to binary classifiers; this pipeline has "
                f"{len(classes) or 'no'} classes"
            )
        return None
    if wanted is None:
        return classes[-1]
    for label in classes:
        if wanted == label or str(wanted) == str(label):
            return label
    raise PackagingError(f"positive_class {wanted!r} is not one of the classes {classes}")


def _name_of(y: Any) -> str | None:
    name = getattr(y, "name", None)
    return str(name) if name is not None else None


def _metrics(
    pipeline: Any,
    columns: list[str],
    classes: list[Any],
    positive: Any,
    X_train: pd.DataFrame,
    y_train: Any,
    X_holdout: pd.DataFrame | None,
    y_holdout: Any,
) -> dict[str, dict]:
    """{"holdout": ...} from the holdout, else {"training": ...} from y_train, else {}."""
    if (X_holdout is None) != (y_holdout is None):
        raise PackagingError("X_holdout and y_holdout go together: give both or neither")
    if X_holdout is not None:
        _checked_frame("X_holdout", X_holdout)
        missing = [c for c in columns if c not in X_holdout.columns]
        if missing:
            raise PackagingError(f"X_holdout lacks the columns {missing}")
        return {"holdout": _scored(pipeline, X_holdout[columns], y_holdout, classes, positive)}
    if y_train is not None:
        return {"training": _scored(pipeline, X_train, y_train, classes, positive)}
    return {}


def _scored(
    pipeline: Any, X: pd.DataFrame, y: Any, classes: list[Any], positive: Any
) -> dict[str, Any]:
    if len(y) != len(X):
        raise PackagingError(f"{len(X)} rows of inputs but {len(y)} labels")
    output = _outputs(pipeline, X, "the metrics'")
    try:
        if len(classes) == 2:
            proba = output[:, classes.index(positive)]
            return fit_metrics.binary_holdout_metrics(y, proba, positive)
        if classes:
            return fit_metrics.multiclass_holdout_metrics(y, output, classes)
        return fit_metrics.regression_metrics(y, output)
    except (ValueError, TypeError) as exc:
        raise PackagingError(f"cannot compute metrics from these labels: {exc}") from exc


def _provenance(
    pipeline: Any,
    X_train: pd.DataFrame,
    X_holdout: pd.DataFrame | None,
    training_data: str | Path | None,
    holdout_data: str | Path | None,
) -> dict[str, Any]:
    steps = getattr(pipeline, "steps", None)
    learner = steps[-1][1] if steps else pipeline
    provenance: dict[str, Any] = {
        "rows": len(X_train),
        "learner": type(learner).__name__,
        "packaged_by": "serving.package",
    }
    for key, path in (("data", training_data), ("holdout", holdout_data)):
        if path is not None:
            provenance[key] = Path(path).name
            if Path(path).is_file():
                provenance[f"{key}_sha256"] = artifacts.sha256_file(Path(path))
    if X_holdout is not None:
        provenance["holdout_rows"] = len(X_holdout)
    return provenance
