"""What the load generators send: real Titanic rows as JSON observations, and the right answers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training import titanic

POSITIVE_CLASS = 1
# Answers must match the pipeline's own predict_proba to this absolute tolerance.
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Workload:
    """Every Titanic row as the request observation, with the probability each must get back."""

    frame: pd.DataFrame
    observations: list[dict[str, Any]]
    expected: np.ndarray

    @property
    def bodies(self) -> list[str]:
        """Each observation as compact JSON, the way the generators splice it into a body."""
        return [_compact_json(obs) for obs in self.observations]


def load(pipeline: Any) -> Workload:
    """Read data/titanic.csv and score every row with the pipeline, all at once."""
    frame, _ = titanic.load()
    frame = frame.reset_index(drop=True)
    positive = list(pipeline.classes_).index(POSITIVE_CLASS)
    expected = pipeline.predict_proba(frame)[:, positive]
    return Workload(frame, [observation(row) for row in frame.to_dict("records")], expected)


def observation(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV row as a client would send it: missing cells as JSON null, numpy as Python."""
    return {name: _json_value(value) for name, value in row.items()}


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    return value


def write_lua_rows(path: Path, workload: Workload) -> Path:
    """Write the rows as a Lua chunk returning {{observation_json, expected_proba}, ...}.

    wrk's threads load it with dofile, so no request is built in Python during the run.
    """
    lines = ["return {"]
    for body, proba in zip(workload.bodies, workload.expected, strict=True):
        lines.append(f"  {{{_lua_string(body)}, {float(proba)!r}}},")
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")
    return Path(path)


def _lua_string(text: str) -> str:
    # json.dumps already made the text ASCII; only backslashes and quotes need escaping.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
