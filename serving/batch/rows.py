"""The rows of a batch, from a JSON array of {id, observation} or from CSV text, kept as sent.

Rows know their ids and the errors that do not depend on the model (a bad id, a row that is
not an object); `check` validates them against a model's schema.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serving.batch import ID_COLUMN, cells
from serving.errors import BadRequest, InvalidInput, PayloadTooLarge, ServiceError, detail
from serving.model.schema import Checked, InputSchema
from serving.protocol.payloads import (
    MAX_ID_LENGTH,
    id_key,
    json_type,
    parse_json,
    parse_observation_id,
)


@dataclass
class Rows:
    """A batch's rows in input order: their ids, and what is wrong with some of them already."""

    # Each row's id as the caller sent it, echoed in the answers (None when absent).
    ids: list[Any]
    # Each valid id as it is stored (`id_key`); None where the id is invalid.
    keys: list[str | None]
    # Rows that cannot be scored by any model, by position.
    errors: dict[int, ServiceError]
    # Warnings about the whole batch, such as CSV columns no model reads.
    warnings: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def check(self, schema: InputSchema, positions: list[int], reject_surprises: bool) -> Checked:
        """Validate the rows at `positions` against a model's schema."""
        raise NotImplementedError

    def ignored(self, schemas: Sequence[InputSchema]) -> list[dict[str, str]]:
        """Warnings about input no model reads, for the whole batch."""
        return []


@dataclass
class JsonRows(Rows):
    """Rows from a JSON array: each observation is checked as /predict checks one."""

    observations: list[Any] = field(default_factory=list)

    def check(self, schema: InputSchema, positions: list[int], reject_surprises: bool) -> Checked:
        """Validate the observations at `positions`."""
        picked = [self.observations[i] for i in positions]
        return schema.validate_many(picked, reject_surprises=reject_surprises)


@dataclass
class CsvRows(Rows):
    """Rows from CSV text: every cell is text until `cells` reads it for a field."""

    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    id_column: str = ID_COLUMN
    # Every column the CSV has, in order, including those dropped from `frame` unread.
    header: list[str] = field(default_factory=list)

    def check(self, schema: InputSchema, positions: list[int], reject_surprises: bool) -> Checked:
        """Validate the rows at `positions`; a column the model needs and the CSV lacks fails
        the whole batch, since no row could be scored."""
        missing = [f.name for f in schema.fields if f.name not in self.frame.columns]
        if missing:
            raise InvalidInput(
                f"The CSV has no column {', '.join(map(repr, missing))}, which the model needs.",
                [detail(name, "missing column") for name in missing],
            )
        whole = len(positions) == len(self.frame)
        columns = {}
        for f in schema.fields:
            column = self.frame[f.name].to_numpy(dtype=object)
            picked = column.tolist() if whole else column[np.asarray(positions, dtype=int)]
            columns[f.name] = cells.values(f, picked)
        return schema.validate_columns(columns, len(positions), reject_surprises=reject_surprises)

    def ignored(self, schemas: Sequence[InputSchema]) -> list[dict[str, str]]:
        """One warning per CSV column that no model reads (the id aside), not one per row."""
        read = {name for schema in schemas for name in schema.by_name}
        return [
            detail(name, "unknown column, ignored")
            for name in self.header or list(self.frame.columns)
            if name != self.id_column and name not in read
        ]


@dataclass
class ColumnRows(Rows):
    """Rows from typed columns (a Parquet file): each value is already what JSON would carry,
    and a null is a missing value, so they are checked as JSON observations are."""

    columns: dict[str, list[Any]] = field(default_factory=dict)
    id_column: str = ID_COLUMN

    def check(self, schema: InputSchema, positions: list[int], reject_surprises: bool) -> Checked:
        """Validate the rows at `positions`; a column the model needs and the file lacks fails
        the whole batch, as for CSV."""
        missing = [f.name for f in schema.fields if f.name not in self.columns]
        if missing:
            raise InvalidInput(
                f"The file has no column {', '.join(map(repr, missing))}, which the model needs.",
                [detail(name, "missing column") for name in missing],
            )
        whole = len(positions) == len(self.ids)
        columns = {
            f.name: self.columns[f.name] if whole else [self.columns[f.name][i] for i in positions]
            for f in schema.fields
        }
        return schema.validate_columns(columns, len(positions), reject_surprises=reject_surprises)

    def ignored(self, schemas: Sequence[InputSchema]) -> list[dict[str, str]]:
        """One warning per column that no model reads (the id aside)."""
        read = {name for schema in schemas for name in schema.by_name}
        return [
            detail(name, "unknown column, ignored")
            for name in self.columns
            if name != self.id_column and name not in read
        ]


def column_rows(columns: dict[str, list[Any]], id_column: str = ID_COLUMN) -> ColumnRows:
    """Rows from typed columns with their ids (an integer or a text, as /predict takes them);
    the id column must exist."""
    if id_column not in columns:
        raise InvalidInput(
            f"The file has no {id_column!r} column; every row needs an id.",
            [detail(id_column, "missing column")],
        )
    sent = columns[id_column]
    rows = ColumnRows(
        ids=[None if isinstance(v, float) and not math.isfinite(v) else v for v in sent],
        keys=[],
        errors={},
        columns={name: values for name, values in columns.items() if name != id_column},
        id_column=id_column,
    )
    rows.keys = [_key({"id": value}, i, rows.errors) for i, value in enumerate(sent)]
    return rows


def check_size(rows: int, limit: int) -> None:
    """An empty batch is 400; one over MAX_BATCH_ROWS is 413."""
    if rows == 0:
        raise BadRequest("The batch is empty; send at least one row.")
    if rows > limit:
        raise PayloadTooLarge(
            f"The batch has more than {limit} rows (MAX_BATCH_ROWS); split it, or score the "
            "file with `flask score`.",
            [detail("rows", f"at most {limit}")],
        )


def from_json(raw: bytes, limit: int) -> JsonRows:
    """Rows from a JSON array of `{"id": ..., "observation": {...}}` objects."""
    body = parse_json(raw)
    if not isinstance(body, list):
        raise BadRequest(
            'A batch is a JSON array of {"id": ..., "observation": {...}} objects, '
            f"got {json_type(body)}."
        )
    check_size(len(body), limit)
    rows = JsonRows(ids=[], keys=[], errors={}, observations=[])
    for i, item in enumerate(body):
        if not isinstance(item, dict):
            rows.errors[i] = InvalidInput(
                'Each row must be an object {"id": ..., "observation": {...}}.',
                [detail("row", f"expected an object, got {json_type(item)}")],
            )
            item = {}
        sent = item.get("id")
        # An invalid id is still echoed, unless it cannot be written back as JSON.
        finite = not isinstance(sent, float) or math.isfinite(sent)
        rows.ids.append(sent if finite else None)
        rows.keys.append(_key(item, i, rows.errors))
        if "observation" not in item:
            rows.errors.setdefault(
                i,
                InvalidInput(
                    "'observation' is required.", [detail("observation", "required: an object")]
                ),
            )
        rows.observations.append(item.get("observation"))
    return rows


def from_csv(
    raw: bytes,
    limit: int,
    id_column: str = ID_COLUMN,
    max_columns: int | None = None,
    keep: set[str] | None = None,
    check: Callable[[str], None] | None = None,
) -> CsvRows:
    """Rows from a whole CSV file in memory: a header line, then one row per record.

    More than `max_columns` columns is 413 before any record is read. Columns outside `keep`
    (the id aside) are dropped as soon as the records are read; `check` is called between
    the stages (a CPU budget)."""
    head, body = split_header(raw)
    header = parse_header(head, max_columns)
    frame = read_frame(head, body, header, nrows=limit + 1)
    if check is not None:
        check("reading the CSV")
    check_size(len(frame), limit)
    return csv_rows(frame, header, id_column, keep)


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """The header record (with its line end) and the rest; a UTF-8 BOM is dropped."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    end = record_end(raw, 0)
    if end is None:
        end = len(raw)
    return raw[:end], raw[end:]


def record_end(data: bytes, start: int) -> int | None:
    """Where the CSV record starting at `start` ends (after its line end), or None when the
    data ends first. A line end inside quotes belongs to the field."""
    # Quotes are counted once each, from the last line end on: a record of many quoted line
    # ends stays linear in its length.
    position, quotes = start, 0
    while True:
        newline = data.find(b"\n", position)
        if newline < 0:
            return None
        quotes += data.count(b'"', position, newline)
        if quotes % 2 == 0:
            return newline + 1
        position = newline + 1


def parse_header(head: bytes, max_columns: int | None = None) -> list[str]:
    """The column names; an empty or repeated name is an error naming it, more than
    `max_columns` names is 413. Linear in the header's length, however many names."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The CSV is not UTF-8 text: {exc}.") from exc
    try:
        header = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as exc:
        raise BadRequest(f"The CSV header cannot be read: {exc}.") from exc
    if not header:
        raise BadRequest("The CSV is empty; send a header line and one row per observation.")
    names = [name.strip() for name in header]
    if max_columns is not None and len(names) > max_columns:
        raise PayloadTooLarge(
            f"The CSV has {len(names)} columns, more than {max_columns} (MAX_BATCH_COLUMNS); "
            "send the id and the columns the model reads.",
            [detail("columns", f"at most {max_columns}")],
        )
    repeated = sorted(name for name, seen in Counter(names).items() if seen > 1)
    if repeated or "" in names:
        problems = [detail(name, "repeated column") for name in repeated]
        if "" in names:
            problems.append(detail(f"column {names.index('') + 1}", "no name"))
        raise InvalidInput("Every CSV column needs a name of its own.", problems)
    return names


def read_frame(
    head: bytes, body: bytes, header: list[str], nrows: int | None = None, first_line: int = 2
) -> pd.DataFrame:
    """CSV records as a DataFrame of text cells (pandas pads short rows with NaN)."""
    try:
        frame = pd.read_csv(
            io.BytesIO(head + body),
            dtype=object,
            na_filter=False,
            encoding="utf-8",
            nrows=nrows,
            index_col=False,
        )
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The CSV is not UTF-8 text: {exc}.") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # pandas counts lines from the header it was given; say where they are in the file.
        reason = re.sub(r"line (\d+)", lambda m: f"line {int(m.group(1)) + first_line - 2}", reason)
        raise BadRequest(f"The CSV cannot be read: {reason}.") from exc
    frame.columns = header
    return frame


def csv_rows(
    frame: pd.DataFrame,
    header: list[str],
    id_column: str = ID_COLUMN,
    keep: set[str] | None = None,
) -> CsvRows:
    """CSV rows with their ids; the id column must exist. Columns outside `keep` (when
    given) are dropped from the frame, which then costs nothing more per unknown column;
    they are still warned about as ignored."""
    if id_column not in header:
        raise InvalidInput(
            f"The CSV has no {id_column!r} column; every row needs an id.",
            [detail(id_column, "missing column")],
        )
    if keep is not None:
        wanted = [name for name in header if name == id_column or name in keep]
        if len(wanted) < len(header):
            frame = frame[wanted]
    sent = [value if type(value) is str else None for value in frame[id_column].tolist()]
    rows = CsvRows(
        ids=sent, keys=list(sent), errors={}, frame=frame, id_column=id_column, header=header
    )
    # A text id is its own key; only the unusual ones need `_key` to say what is wrong. The
    # test mirrors payloads.parse_observation_id's rules: a rule added there belongs here too.
    longest = MAX_ID_LENGTH
    for i, text in enumerate(sent):
        if (
            text is None
            or len(text) > longest
            or not text.strip()
            or "\x00" in text
            or not text.isascii()  # may not be encodable: `_key` looks closer
        ):
            rows.keys[i] = _key({"id": text}, i, rows.errors)
    return rows


def _key(item: dict[str, Any], position: int, errors: dict[int, ServiceError]) -> str | None:
    try:
        observation_id = parse_observation_id(item)
    except InvalidInput as error:
        errors.setdefault(position, error)
        return None
    return id_key(observation_id)
