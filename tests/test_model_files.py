"""Model files as an attacker would leave them: hostile pickles, swapped files and folders.

Nothing here may run a hostile payload: each one would write a marker file, and every test
checks that the marker never appears.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import pandas as pd
import pytest
import skops.io

from serving.config import Settings
from serving.model.registry import Registry
from serving.model.runtime import LoadedModel, ModelLoadError
from tests.conftest import REPO_ROOT, fit_tiny_model

OBSERVATIONS = [{"x": 2.0, "k": 1, "color": "red"}, {"x": -2.0, "k": 3, "color": None}]
COMMITTED = [REPO_ROOT, *sorted(p for p in (REPO_ROOT / "models").glob("*/*") if p.is_dir())]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RunsCode:
    """Unpickles by evaluating `source` with `names` (the real dtypes among them): the
    expression writes the marker, then evaluates to the real object, as an attacker's would."""

    def __init__(self, marker: Path, real: object):
        self.marker = marker
        self.real = real

    def __reduce__(self):
        source = "(__import__('pathlib').Path(marker).write_text('ran'), real)[1]"
        return (builtins.eval, (source, {"marker": str(self.marker), "real": self.real}))


class RunsShell:
    """Unpickles by calling os.system, the issue's payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def hostile_dtypes(folder: Path, marker: Path, payload: str = "eval") -> None:
    """Replace a folder's dtypes.pickle with one that writes `marker` when unpickled."""
    with (folder / "dtypes.pickle").open("rb") as handle:
        real = pickle.load(handle)  # our own file, written by fit_tiny_model
    hostile = RunsCode(marker, real) if payload == "eval" else RunsShell(marker)
    (folder / "dtypes.pickle").write_bytes(pickle.dumps(hostile))


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Settings that load the bundled root model and the endpoints under tmp_path/models."""
    return Settings().updated(
        {"root_model_dir": REPO_ROOT, "models_dir": tmp_path / "models", **overrides}
    )


# --- dtypes.pickle is read by a restricted unpickler -------------------------------------


def test_the_hostile_pickle_really_runs_code_when_unpickled(tmp_path: Path):
    # The control: the payload works, so the tests below show that loading never runs it.
    folder = fit_tiny_model(tmp_path / "tiny")
    marker = tmp_path / "marker"
    hostile_dtypes(folder, marker)
    with (folder / "dtypes.pickle").open("rb") as handle:
        assert isinstance(pickle.load(handle), pd.Series)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(("payload", "named"), [("eval", "builtins.eval"), ("shell", "system")])
def test_a_hostile_dtypes_pickle_is_refused_without_running(
    tmp_path: Path, payload: str, named: str
):
    folder = fit_tiny_model(tmp_path / "tiny")
    marker = tmp_path / "marker"
    hostile_dtypes(folder, marker, payload)
    with pytest.raises(
        ModelLoadError, match=f"{folder}: dtypes.pickle is refused: it names .*{named}"
    ):
        LoadedModel.load(folder, "tiny")
    assert not marker.exists()


def test_a_hostile_dtypes_pickle_stops_startup_or_is_skipped(tmp_path: Path):
    folder = fit_tiny_model(tmp_path / "models" / "tiny" / "1")
    marker = tmp_path / "marker"
    hostile_dtypes(folder, marker)
    with pytest.raises(ModelLoadError, match="dtypes.pickle is refused: it names builtins.eval"):
        Registry.load(settings_for(tmp_path, compile_models=False))
    assert not marker.exists()

    registry = Registry.load(settings_for(tmp_path, compile_models=False, skip_broken_models=True))
    assert registry.find("tiny", "1") is None
    assert registry.find("default", "1") is not None
    [broken] = registry.broken
    assert (broken["endpoint"], broken["version"]) == ("tiny", "1")
    assert "dtypes.pickle is refused: it names builtins.eval" in broken["error"]
    assert not marker.exists()


DTYPES = {
    "int": pd.Series([1, 2]),
    "float": pd.Series([1.0, 2.0]),
    "object": pd.Series(["a", None], dtype=object),
    "bool": pd.Series([True, False]),
    "category": pd.Series(["a", "b"], dtype="category"),
    "nullable_int": pd.Series([1, None], dtype="Int64"),
    "nullable_float": pd.Series([1.0, None], dtype="Float64"),
    "nullable_bool": pd.Series([True, None], dtype="boolean"),
    "string": pd.Series(["a", None], dtype="string"),
    "int32": pd.Series([1, 2], dtype="int32"),
}


@pytest.mark.parametrize("form", ["series", "dict"])
def test_every_dtype_the_schema_accepts_still_loads(form: str):
    from serving.model import dtypes_pickle

    dtypes = pd.DataFrame(DTYPES).dtypes
    written = dtypes if form == "series" else dict(dtypes.items())
    loaded = dtypes_pickle.loads(pickle.dumps(written))
    if form == "series":
        pd.testing.assert_series_equal(loaded, dtypes)
    else:
        assert loaded == written


def test_dtypes_whose_column_names_are_arrow_strings_load():
    """pandas 3 with pyarrow (installed for Parquet) pickles the names as an Arrow array."""

    from serving.model import dtypes_pickle

    dtypes = pd.DataFrame({"Age": [1.0], "Sex": ["male"]}).dtypes
    dtypes.index = dtypes.index.astype(pd.StringDtype("pyarrow"))
    written = pickle.dumps(dtypes)
    assert b"ArrowStringArray" in written and b"_restore_array" in written
    loaded = dtypes_pickle.loads(written)
    pd.testing.assert_series_equal(loaded, dtypes)


def test_an_arrow_array_with_broken_offsets_is_refused_before_pandas_reads_it():
    import numpy as np
    import pyarrow as pa

    from serving.model import dtypes_pickle

    # Passes pyarrow's cheap checks; its offsets go backwards, which only the full check sees.
    offsets = pa.py_buffer(np.array([0, 2, 1], dtype=np.int32).tobytes())
    broken = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"ab")])
    with pytest.raises(pickle.UnpicklingError, match="non-monotonic offset"):
        dtypes_pickle.loads(pickle.dumps(broken))


class _ArrowState:
    """Pickles as pyarrow's array rebuilding with whatever state it is given."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        from pyarrow.lib import _restore_array

        return _restore_array, (self.state,)


class _Allocation:
    """Pickles as bytearray(n): n bytes of memory asked for by a 30-byte file."""

    def __reduce__(self):
        return bytearray, (10**10,)


def _crafted_arrow_pickles() -> dict[str, bytes]:
    import pyarrow as pa

    text = pa.py_buffer(b"ab")
    offsets = pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00")
    children: list = []
    looping = (pa.string(), 1, 0, 0, [None, offsets, text], children, None)
    children.append(looping)
    return {
        # pyarrow reads buffers[1] and buffers[2] of a text array without checking there are
        # three: out of bounds in C++, before any validation could run.
        "one buffer": pickle.dumps(_ArrowState((pa.string(), 1, 0, 0, [text], [], None))),
        # Children that contain themselves: pyarrow's rebuilding recurses without limit.
        "children": pickle.dumps(_ArrowState(looping)),
        "not text": pickle.dumps(
            _ArrowState((pa.int64(), 1, 0, 0, [None, pa.py_buffer(bytes(8))], [], None))
        ),
        "a number of bytes": pickle.dumps(_Allocation()),
    }


def test_crafted_arrow_states_are_refused_in_python_before_pyarrow_sees_them():
    """Each of these crashed the process (SIGSEGV) or asked for 10 GB before the check: run
    in a child process, so a crash fails this test instead of ending the run."""
    pytest.importorskip("pyarrow")
    for name, data in _crafted_arrow_pickles().items():
        script = (
            "import pickle, sys\n"
            "from serving.model import dtypes_pickle\n"
            "try:\n"
            "    dtypes_pickle.loads(sys.stdin.buffer.read())\n"
            "except pickle.UnpicklingError as exc:\n"
            "    print('refused:', exc)\n"
        )
        child = subprocess.run(
            [sys.executable, "-c", script],
            input=data,
            capture_output=True,
            cwd=REPO_ROOT,
            timeout=60,
            check=False,
        )
        assert child.returncode == 0, (name, child.returncode, child.stderr[-2000:])
        assert child.stdout.startswith(b"refused:"), (name, child.stdout, child.stderr[-2000:])


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_the_committed_dtypes_load_through_the_restricted_unpickler(folder: Path):
    from serving.model import dtypes_pickle

    with (folder / "dtypes.pickle").open("rb") as handle:
        expected = pickle.load(handle)  # our own committed files
    pd.testing.assert_series_equal(
        dtypes_pickle.loads((folder / "dtypes.pickle").read_bytes()), expected
    )


# --- every model file's digest is pinned in model.json -----------------------------------


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_committed_model_json_pins_every_file(folder: Path):
    model = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    names = ["pipeline.pickle", "dtypes.pickle", "columns.json"]
    assert model["sha256"] == {name: sha256(folder / name) for name in names}
    assert model["pipeline_sha256"] == model["sha256"]["pipeline.pickle"]


def test_training_pins_every_file(tmp_path: Path):
    from serving.model import artifacts

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    from sklearn.linear_model import LinearRegression

    pipeline = LinearRegression().fit(frame, [0.0, 1.0, 2.0, 3.0])
    model = artifacts.write_model(tmp_path, pipeline, frame, {"name": "line"})
    names = ["pipeline.pickle", "dtypes.pickle", "columns.json"]
    assert model["sha256"] == {name: sha256(tmp_path / name) for name in names}
    assert json.loads((tmp_path / "model.json").read_text())["sha256"] == model["sha256"]
    assert (
        LoadedModel.load(tmp_path, "line").digests["dtypes.pickle"]
        == model["sha256"]["dtypes.pickle"]
    )


@pytest.mark.parametrize("name", ["pipeline.pickle", "dtypes.pickle", "columns.json"])
def test_a_changed_pinned_file_is_refused(tmp_path: Path, name: str):
    folder = fit_tiny_model(tmp_path / "tiny", pin=True)
    LoadedModel.load(folder, "tiny", compile=False)
    # Same content, other bytes: a pin is on bytes, not meaning.
    path = folder / name
    if name == "columns.json":
        path.write_text(json.dumps(json.loads(path.read_text()), indent=1))
    elif name == "dtypes.pickle":
        path.write_bytes(pickle.dumps(pd.read_pickle(path), protocol=2))
    else:
        joblib.dump(joblib.load(path), path, compress=1)
    with pytest.raises(
        ModelLoadError,
        match=f"{folder}: {name} does not match its sha256 in model.json; the file was replaced",
    ):
        LoadedModel.load(folder, "tiny")


def test_digests_are_checked_before_anything_is_unpickled(tmp_path: Path):
    folder = fit_tiny_model(tmp_path / "tiny", pin=True)
    marker = tmp_path / "marker"
    # A hostile pipeline.pickle: joblib would run it, but its digest is not the pinned one.
    (folder / "pipeline.pickle").write_bytes(pickle.dumps(RunsCode(marker, None)))
    with pytest.raises(ModelLoadError, match="pipeline.pickle does not match its sha256"):
        LoadedModel.load(folder, "tiny")
    assert not marker.exists()


def test_a_folder_without_pins_loads_as_before(tmp_path: Path):
    folder = fit_tiny_model(tmp_path / "tiny")
    model = LoadedModel.load(folder, "tiny", compile=False)
    assert "sha256" not in model.metadata
    assert model.digests["pipeline.pickle"] == sha256(folder / "pipeline.pickle")


@pytest.mark.parametrize(
    ("pins", "message"),
    [
        ({"pipeline.pickle": "nothex"}, "the digest of pipeline.pickle must be 64 lowercase hex"),
        ({"dtype.pickle": "0" * 64}, "pins dtype.pickle, which is not in the folder"),
        (["0" * 64], "must be a JSON object of file name to sha256"),
    ],
)
def test_a_malformed_pin_is_refused(tmp_path: Path, pins: object, message: str):
    folder = fit_tiny_model(tmp_path / "tiny", sha256=pins)
    with pytest.raises(ModelLoadError, match=message):
        LoadedModel.load(folder, "tiny")


def test_the_old_pipeline_pin_must_agree_with_the_new_one(tmp_path: Path):
    folder = fit_tiny_model(tmp_path / "tiny", pin=True, pipeline_sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="does not match the pipeline_sha256"):
        LoadedModel.load(folder, "tiny")


# --- MODEL_DIGESTS: the operator's pins, outside the model folders -----------------------


def manifest_of(tmp_path: Path) -> dict[str, dict[str, str]]:
    from serving.model.digests import manifest_for

    return manifest_for(REPO_ROOT, tmp_path / "models", "default")


def write_manifest(tmp_path: Path, manifest: dict) -> Path:
    path = tmp_path / "pins" / "digests.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def test_the_manifest_pins_every_file_of_every_folder(tmp_path: Path):
    fit_tiny_model(tmp_path / "models" / "tiny" / "1", pin=True)
    manifest = manifest_of(tmp_path)
    assert sorted(manifest) == ["default/1", "tiny/1"]
    assert manifest["tiny/1"] == {
        name: sha256(tmp_path / "models" / "tiny" / "1" / name)
        for name in ["pipeline.pickle", "dtypes.pickle", "columns.json", "model.json"]
    }


def test_a_folder_matching_the_manifest_loads(tmp_path: Path):
    fit_tiny_model(tmp_path / "models" / "tiny" / "1", pin=True)
    path = write_manifest(tmp_path, manifest_of(tmp_path))
    for setting in (str(path), path.read_text()):  # a path, or the JSON itself
        registry = Registry.load(settings_for(tmp_path, model_digests=setting))
        assert registry.find("tiny", "1") is not None
        assert registry.find("default", "1") is not None


def test_a_swapped_folder_is_refused(tmp_path: Path):
    folder = tmp_path / "models" / "tiny" / "1"
    fit_tiny_model(folder, pin=True)
    path = write_manifest(tmp_path, manifest_of(tmp_path))
    # The whole folder replaced by another, self-consistent one: its model.json pins its own
    # files, so only the pins kept outside can tell.
    shutil.rmtree(folder)
    fit_tiny_model(folder, shift=-1.0, pin=True)
    LoadedModel.load(folder, "tiny", "1")
    with pytest.raises(
        ModelLoadError,
        match=r"tiny/1: pipeline.pickle does not match its digest in MODEL_DIGESTS \(.*digests"
        r".json\); the folder was changed since it was pinned",
    ):
        Registry.load(settings_for(tmp_path, model_digests=str(path)))
    registry = Registry.load(
        settings_for(tmp_path, model_digests=str(path), skip_broken_models=True)
    )
    assert registry.find("tiny", "1") is None
    assert [b["version"] for b in registry.broken] == ["1"]


def test_a_hostile_folder_the_manifest_does_not_match_never_runs(tmp_path: Path):
    folder = tmp_path / "models" / "tiny" / "1"
    fit_tiny_model(folder)
    path = write_manifest(tmp_path, manifest_of(tmp_path))
    marker = tmp_path / "marker"
    (folder / "pipeline.pickle").write_bytes(pickle.dumps(RunsCode(marker, None)))
    with pytest.raises(ModelLoadError, match="pipeline.pickle does not match its digest"):
        Registry.load(settings_for(tmp_path, model_digests=str(path)))
    assert not marker.exists()


def test_a_version_the_manifest_does_not_know_is_refused(tmp_path: Path):
    fit_tiny_model(tmp_path / "models" / "tiny" / "1", pin=True)
    path = write_manifest(tmp_path, manifest_of(tmp_path))
    fit_tiny_model(tmp_path / "models" / "tiny" / "2", version="2", pin=True)
    with pytest.raises(ModelLoadError, match="has no entry for 'tiny/2'; every served version"):
        Registry.load(settings_for(tmp_path, model_digests=str(path)))


def test_a_manifest_entry_must_pin_the_data_files(tmp_path: Path):
    fit_tiny_model(tmp_path / "models" / "tiny" / "1", pin=True)
    manifest = manifest_of(tmp_path)
    del manifest["tiny/1"]["dtypes.pickle"]
    path = write_manifest(tmp_path, manifest)
    with pytest.raises(ModelLoadError, match=r"does not pin \['dtypes.pickle'\]"):
        Registry.load(settings_for(tmp_path, model_digests=str(path)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "MODEL_DIGESTS .* cannot be read"),
        ("{not json", "is not valid JSON"),
        ("[]", "must be a JSON object keyed by"),
        ('{"default/1": {"pipeline.pickle": "abc"}}', "must be 64 lowercase hex digits"),
    ],
)
def test_a_broken_manifest_stops_startup_even_when_skipping(
    tmp_path: Path, content: str | None, message: str
):
    path = tmp_path / "digests.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelLoadError, match=message):
        Registry.load(settings_for(tmp_path, model_digests=str(path), skip_broken_models=True))


def test_model_digests_is_read_from_the_environment():
    assert Settings.from_env({"MODEL_DIGESTS": " /etc/pins.json "}).model_digests == (
        "/etc/pins.json"
    )
    assert Settings.from_env({}).model_digests is None


def test_the_flask_command_prints_the_manifest(tmp_path: Path, database_url: str):
    from tests.conftest import make_app

    fit_tiny_model(tmp_path / "models" / "tiny" / "1")
    application = make_app(database_url, tmp_path / "models", migrate_on_start=False)
    runner = application.test_cli_runner()
    result = runner.invoke(args=["pin-digests"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == manifest_of(tmp_path)
    result = runner.invoke(args=["pin-digests", "--output", str(tmp_path / "pins.json")])
    assert result.exit_code == 0, result.output
    assert result.output == f"pinned 2 versions in {tmp_path / 'pins.json'}\n"
    assert json.loads((tmp_path / "pins.json").read_text()) == manifest_of(tmp_path)


# --- pipeline.skops: a pipeline loaded without running arbitrary code --------------------


def skops_folder(tmp_path: Path, **metadata: object) -> Path:
    """The tiny model with its pipeline saved by skops instead of pickle."""
    folder = fit_tiny_model(tmp_path / "tiny", **metadata)
    pipeline = joblib.load(folder / "pipeline.pickle")
    skops.io.dump(pipeline, folder / "pipeline.skops")
    (folder / "pipeline.pickle").unlink()
    return folder


def test_a_skops_pipeline_loads_and_scores_like_the_pickle(tmp_path: Path):
    pickled = LoadedModel.load(fit_tiny_model(tmp_path / "pickled"), "tiny")
    folder = skops_folder(tmp_path, skops_trusted=["numpy.dtype"])
    model = LoadedModel.load(folder, "tiny")
    assert [s.proba for s in model.predict(OBSERVATIONS)] == [
        s.proba for s in pickled.predict(OBSERVATIONS)
    ]
    assert model.fast_path["enabled"] is True
    assert set(model.digests) == {"pipeline.skops", "dtypes.pickle", "columns.json", "model.json"}


def test_a_skops_type_model_json_does_not_trust_is_refused(tmp_path: Path):
    folder = skops_folder(tmp_path)
    with pytest.raises(
        ModelLoadError,
        match=r"pipeline.skops is refused: it holds types .* does not list: \['numpy.dtype'\]",
    ):
        LoadedModel.load(folder, "tiny")


def test_model_json_cannot_trust_types_outside_the_ml_packages(tmp_path: Path):
    folder = skops_folder(tmp_path, skops_trusted=["numpy.dtype", "builtins.eval"])
    with pytest.raises(ModelLoadError, match=r"skops_trusted lists \['builtins.eval'\]"):
        LoadedModel.load(folder, "tiny")


def test_a_custom_transformer_in_skops_needs_trusting(tmp_path: Path):
    pipeline = joblib.load(REPO_ROOT / "pipeline.pickle")
    folder = tmp_path / "titanic"
    folder.mkdir()
    for name in ("dtypes.pickle", "columns.json"):
        shutil.copy(REPO_ROOT / name, folder / name)
    skops.io.dump(pipeline, folder / "pipeline.skops")
    untrusted = skops.io.get_untrusted_types(file=folder / "pipeline.skops")
    assert "custom_transformers.family.FamilySize" in untrusted
    (folder / "model.json").write_text(json.dumps({"skops_trusted": ["numpy.dtype"]}))
    with pytest.raises(ModelLoadError, match="custom_transformers.family.FamilySize"):
        LoadedModel.load(folder, "titanic")
    (folder / "model.json").write_text(json.dumps({"skops_trusted": untrusted}))
    model = LoadedModel.load(folder, "titanic")
    assert model.fast_path["enabled"] is True


def test_a_folder_with_both_pipeline_formats_is_refused(tmp_path: Path):
    folder = skops_folder(tmp_path, skops_trusted=["numpy.dtype"])
    shutil.copy(fit_tiny_model(tmp_path / "other") / "pipeline.pickle", folder)
    with pytest.raises(ModelLoadError, match="holds both pipeline.pickle and pipeline.skops"):
        LoadedModel.load(folder, "tiny")


def test_a_skops_folder_is_pinned_like_any_other(tmp_path: Path):
    folder = tmp_path / "models" / "tiny" / "1"
    folder.parent.mkdir(parents=True)
    skops_folder(tmp_path, skops_trusted=["numpy.dtype"]).rename(folder)
    manifest = manifest_of(tmp_path)
    assert "pipeline.skops" in manifest["tiny/1"]
    path = write_manifest(tmp_path, manifest)
    assert Registry.load(settings_for(tmp_path, model_digests=str(path))).find("tiny", "1")
    del manifest["tiny/1"]["pipeline.skops"]
    write_manifest(tmp_path, manifest)
    with pytest.raises(ModelLoadError, match=r"does not pin \['pipeline.skops'\]"):
        Registry.load(settings_for(tmp_path, model_digests=str(path)))
