"""`flask models`: turn a saved pipeline into a model folder, check a folder before it is
deployed, and publish one to a running deployment (`push`, in serving.commands.publish_command).

What needs pandas or scikit-learn (packaging, the model loader, joblib) is imported inside the
command that uses it: every `flask` command, `--help` too, defines this group."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup

from serving.commands.publish_command import push_command
from serving.decisions.lifecycle import STATUSES
from serving.model import skops_format
from serving.model.folders import FORMATS, OUT_OF_RANGE, read_metadata

if TYPE_CHECKING:
    import pandas as pd

PARQUET_SUFFIXES = (".parquet", ".pq")


@click.group("models", cls=AppGroup)
def models_group() -> None:
    """Package model folders, check them before they are deployed, publish them."""


models_group.add_command(push_command)


@models_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--endpoint", required=True, help="the endpoint to serve it under")
@click.option(
    "--training-data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV (or Parquet, with pyarrow installed) of the rows it was fitted on",
)
@click.option("--target", help="the label column of the data files (dropped from the inputs)")
@click.option(
    "--holdout-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="rows kept out of training, with the --target column, for model.json's metrics",
)
@click.option("--version", help="default: the next free number")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="initial status; default: production for a new endpoint, else testing",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    help="how to store the pipeline; default: skops for a .skops FILE, else pickle",
)
@click.option("--positive-class", help="binary classifiers: the class `proba` is about")
@click.option("--description", help="a line kept in model.json")
@click.option(
    "--out-of-range",
    type=click.Choice(OUT_OF_RANGE),
    default="warn",
    show_default=True,
    help="answer inputs outside the training profile with warnings, or refuse them (422)",
)
def add_command(
    file: Path,
    endpoint: str,
    training_data: Path,
    target: str | None,
    holdout_data: Path | None,
    version: str | None,
    status: str | None,
    format_: str | None,
    positive_class: str | None,
    description: str | None,
    out_of_range: str,
) -> None:
    """Write MODELS_DIR/<endpoint>/<version>/ from a fitted pipeline saved in FILE: joblib or
    pickle (.joblib, .pkl, .pickle) or skops (.skops).

    FILE must be a local file you chose and trust: loading a pickle runs whatever code it
    holds, so never name one that someone else supplied unreviewed. A .skops file is loaded
    trusting only types from scikit-learn, NumPy, SciPy and custom_transformers.

    The training data is read as pandas reads it (the dtypes a pipeline fitted on
    pd.read_csv's frame expects) and narrowed to the columns the pipeline was fitted on; the
    folder gets its dtypes, columns, profile and, with --holdout-data, holdout metrics."""
    from serving.model.packaging import PackagingError, package

    pipeline = _read_pipeline(file)
    frame = _read_frame(training_data)
    features = _features(pipeline, frame, target, training_data)
    y_train = frame[target] if target else None
    X_holdout = y_holdout = None
    if holdout_data is not None:
        if not target:
            raise click.UsageError("--holdout-data needs --target: the holdout's labels")
        holdout = _read_frame(holdout_data)
        _require(holdout, [*features, target], holdout_data)
        X_holdout, y_holdout = holdout[features], holdout[target]
    chosen_format = format_ or ("skops" if file.suffix == ".skops" else "pickle")
    settings = current_app.config["SETTINGS"]
    try:
        folder = package(
            pipeline,
            frame[features],
            y_train,
            X_holdout,
            y_holdout,
            endpoint=endpoint,
            version=version,
            models_dir=settings.models_dir,
            initial_status=status,
            positive_class=positive_class,
            format=chosen_format,  # type: ignore[arg-type]  # click.Choice checked it
            description=description,
            out_of_range=out_of_range,
            target=target,
            training_data=training_data,
            holdout_data=holdout_data,
        )
    except PackagingError as exc:
        raise click.ClickException(str(exc)) from exc
    metadata = read_metadata(folder)
    click.echo(
        f"wrote {_shown(folder)}: endpoint {endpoint} version {folder.name}, "
        f"{metadata['task']}, {len(features)} inputs, starts as {metadata['initial_status']}"
    )
    for group, values in metadata.get("metrics", {}).items():
        figures = (
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
        )
        click.echo(f"{group} metrics: {', '.join(figures)}")


@models_group.command("check")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def check_command(folder: Path) -> None:
    """Say whether FOLDER will load as start-up would load it, before it is deployed.

    The same checks as start-up (name, every file's sha256 in model.json and in MODEL_DIGESTS
    when set, columns, dtypes, the pipeline itself, declared version and status), then a
    prediction on rows built from its training profile. FOLDER is read as
    <endpoint>/<version> from its last two path parts (the root model folder as the default
    endpoint). Exits 1 with the reason when it would not load."""
    from serving.compiled import NotCompilable, reference_rows
    from serving.model.registry import Registry
    from serving.model.runtime import ModelLoadError

    settings = current_app.config["SETTINGS"]
    root = folder.resolve() == Path(settings.root_model_dir).resolve()
    endpoint = settings.default_endpoint if root else folder.resolve().parent.name
    version = None if root else folder.name
    try:
        model = Registry.check_folder(settings, folder, endpoint, version)
    except ModelLoadError as exc:
        raise click.ClickException(f"{exc} (start-up would refuse it)") from exc
    profile = model.metadata.get("profile")
    try:
        rows = reference_rows(model.columns, model.dtypes, profile, model.pipeline)
    except NotCompilable:
        rows = []
    try:
        scored = model.predict(rows)
    except Exception as exc:
        raise click.ClickException(
            f"{_shown(folder)} loads but cannot predict on rows built from its training "
            f"profile: {type(exc).__name__}: {exc}"
        ) from exc
    click.echo(
        f"{_shown(folder)} will load: endpoint {endpoint} version {model.version}, "
        f"{model.task}, {len(model.columns)} inputs"
    )
    if scored:
        click.echo(f"predicted {len(scored)} rows built from its training profile")
    if not profile:
        click.echo(
            "warning: model.json has no training profile, so answers carry no range warnings "
            "and drift has nothing to compare with (folders written by `flask models add` "
            "or serving.model.packaging.package have one)"
        )
    fast = model.fast_path
    click.echo("fast path: on" if fast["enabled"] else f"fast path: off ({fast['reason']})")


def _shown(path: Path) -> str:
    """A path as the operator would type it: relative to the working folder when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _read_pipeline(file: Path) -> Any:
    """The estimator in FILE: skops for .skops (trusting the trustable packages' types only),
    joblib (which reads plain pickles too) for anything else."""
    kind = "skops" if file.suffix == ".skops" else "joblib or pickle"
    try:
        data = file.read_bytes()
        if file.suffix != ".skops":
            import joblib

            return joblib.load(io.BytesIO(data))
        import skops.io

        untrusted = sorted(set(skops.io.get_untrusted_types(data=data)))
        refused = skops_format.untrustable(untrusted)
        if refused:
            raise click.ClickException(
                f"{file} is refused: it holds types {refused}, and only types from "
                f"{', '.join(skops_format.TRUSTABLE_PACKAGES)} can be trusted"
            )
        return skops.io.loads(data, trusted=untrusted)
    except click.ClickException:
        raise
    except (ModuleNotFoundError, AttributeError) as exc:
        raise click.ClickException(
            f"{file} needs code that cannot be imported ({exc}); custom transformers belong in "
            "the custom_transformers package"
        ) from exc
    except Exception as exc:
        raise click.ClickException(
            f"{file} cannot be loaded as a {kind} file: {type(exc).__name__}: {exc}"
        ) from exc


def _read_frame(path: Path) -> pd.DataFrame:
    """A CSV as pandas reads it by default; Parquet when pyarrow (or fastparquet) is here."""
    import pandas as pd

    if path.suffix.lower() in PARQUET_SUFFIXES:
        if not any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")):
            raise click.ClickException(
                f"{path}: reading Parquet needs pyarrow, which is not installed here "
                "(.venv/bin/pip install pyarrow), or give the data as CSV"
            )
        reader = pd.read_parquet
    else:
        reader = pd.read_csv
    try:
        return reader(path)
    except Exception as exc:
        raise click.ClickException(f"{path} cannot be read: {type(exc).__name__}: {exc}") from exc


def _features(pipeline: Any, frame: pd.DataFrame, target: str | None, path: Path) -> list[str]:
    """The input columns, in the order the pipeline was fitted on: its feature_names_in_, or
    (fitted without names) every column of the data but the target."""
    if target is not None and target not in frame.columns:
        raise click.ClickException(
            f"--target {target!r} is not a column of {path.name}; its columns: "
            f"{list(frame.columns)}"
        )
    fitted = getattr(pipeline, "feature_names_in_", None)
    if fitted is None:
        return [str(c) for c in frame.columns if c != target]
    features = [str(c) for c in fitted]
    if target in features:
        raise click.ClickException(
            f"--target {target!r} is one of the pipeline's inputs; name the label column"
        )
    _require(frame, features, path)
    return features


def _require(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise click.ClickException(
            f"{path.name} lacks columns the pipeline was fitted on (or the target): {missing}"
        )
