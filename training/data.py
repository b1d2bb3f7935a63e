"""Where the bundled training data lives, found from the package and never from the cwd."""

from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV with pandas' default type inference, exactly as the artifacts expect it."""
    return pd.read_csv(path)


def describe_path(path: Path) -> str:
    """Return the path relative to the repository root when inside it, so it is machine-free."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return resolved.name
