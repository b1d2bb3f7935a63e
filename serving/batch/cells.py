"""CSV cells as the JSON values they stand for, so a CSV row is checked by the same rules as a
JSON observation and stored with the same spelling.

A cell is text. It is missing (JSON null) when it is empty or one of the markers
`pandas.read_csv` reads as missing by default, as it did when the training data was read.
Number and integer columns read the text as Python's `float` and `int` read it (the same
parsers JSON numbers go through); anything else stays text and fails validation with the
usual message. Boolean columns take true/false as pandas spells them; category columns match
the text of a category.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeGuard, TypeVar

from serving.model.schema import BOOLEAN, CATEGORY, INTEGER, NUMBER, Field
from serving.protocol.payloads import NonFinite

# pandas.read_csv's default missing-value markers (keep_default_na=True).
MISSING_CELLS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
TRUE_CELLS = frozenset({"True", "TRUE", "true"})
FALSE_CELLS = frozenset({"False", "FALSE", "false"})


def is_missing(cell: Any) -> bool:
    """Whether a cell stands for a missing value (pandas pads short rows with NaN)."""
    return type(cell) is not str or cell in MISSING_CELLS


def values(f: Field, cells: Sequence[Any]) -> list[Any]:
    """One CSV column's cells as JSON values for the field `f`."""
    if f.kind == NUMBER:
        return _numbers(cells, float, _float)
    if f.kind == INTEGER:
        return _numbers(cells, int, _integer)
    if f.kind == BOOLEAN:
        return [_boolean(cell) for cell in cells]
    missing = MISSING_CELLS
    if f.kind == CATEGORY:
        by_text = {str(c): c for c in f.categories or ()}
        return [
            None if type(cell) is not str or cell in missing else by_text.get(cell, cell)
            for cell in cells
        ]
    return [None if type(cell) is not str or cell in missing else cell for cell in cells]


def _numbers(cells: Sequence[Any], parse: Any, one: Any) -> list[Any]:
    """The column read by `parse` in one pass when every cell is a plain number or missing;
    otherwise cell by cell with `one`, which knows the exceptions."""
    missing = MISSING_CELLS
    # Python reads "1_000" as 1000; JSON and pandas do not, so neither does a CSV cell.
    if any("_" in c for c in cells if type(c) is str):
        return [one(cell) for cell in cells]
    try:
        out = [None if type(c) is not str or c in missing else parse(c) for c in cells]
    except ValueError:
        return [one(cell) for cell in cells]
    if parse is float and not all(map(math.isfinite, filter(_present, out))):
        return [one(cell) for cell in cells]
    return out


_T = TypeVar("_T")


def _present(value: _T | None) -> TypeGuard[_T]:
    return value is not None


def _float(cell: Any) -> Any:
    if is_missing(cell):
        return None
    if "_" in cell:
        return cell
    try:
        value = float(cell)
    except ValueError:
        return cell
    if math.isfinite(value):
        return value
    # "nan" spelled otherwise than pandas' markers still means missing; infinities are kept
    # so validation can name them.
    return None if math.isnan(value) else NonFinite(value)


def _integer(cell: Any) -> Any:
    if is_missing(cell):
        return None
    if "_" in cell:
        return cell
    try:
        return int(cell)
    except ValueError:
        # "3.0" is an integer as JSON's 3.0 is; "3.5" fails validation by name.
        return _float(cell)


def _boolean(cell: Any) -> Any:
    if is_missing(cell):
        return None
    if cell in TRUE_CELLS:
        return True
    if cell in FALSE_CELLS:
        return False
    return cell
