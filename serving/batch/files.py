"""Scoring a CSV file larger than memory, resumably.

The input is read a chunk of records at a time. While one chunk is being checked and scored,
the previous one is stored (one transaction), its answers are appended to the output and
flushed to disk, and then a checkpoint beside the output records how far input and output
go. After an interruption, even SIGKILL, the next run truncates the output to the
checkpoint and reads the input from there: rows committed but not yet written out are
stored again, which replays them (same id, same observation), so every input row ends up
exactly once in the output and once in the database.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pandas as pd

from serving.batch import render, rows
from serving.batch.core import Results
from serving.batch.progress import Progress
from serving.errors import BadRequest
from serving.store.database import db

if TYPE_CHECKING:  # the data plane imports serving.batch: only its type is needed here
    from serving.dataplane import PreparedBatch

# A record this long without its closing quote means the quote is never closed.
MAX_RECORD_BYTES = 16 << 20


def unclosed_quote(line: int) -> BadRequest:
    """The refusal of a record whose lines inside quotes pass MAX_RECORD_BYTES: a stray quote
    rather than a record, refused instead of read whole (both engines say this)."""
    return BadRequest(
        f"The CSV record at line {line} never closes its quote (more than "
        f"{MAX_RECORD_BYTES:,} bytes inside quotes); is a quote left open?"
    )


def ends_quoted(line: int) -> BadRequest:
    """The refusal of a CSV whose last record is still inside quotes at the end of the file."""
    return BadRequest(f"The CSV ends inside a quoted field of the record at line {line}.")


class Refused(Exception):
    """The run cannot start as asked; the message says why and what to do."""


class CsvReader:
    """A CSV file read a chunk of records at a time, knowing the byte offset after each."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        with path.open("rb") as handle:
            start = handle.read(MAX_RECORD_BYTES)
        bom = 3 if start.startswith(b"\xef\xbb\xbf") else 0
        end = rows.record_end(start, bom)
        if end is None:
            if len(start) >= MAX_RECORD_BYTES:
                raise BadRequest("The CSV header line does not end; is a quote left open?")
            end = len(start)
        self.head = start[bom:end]
        self.header = rows.parse_header(self.head)
        self.data_start = end

    def chunks(self, start: int, size: int, line: int = 2) -> Iterator[Chunk]:
        """Every `size` records from byte `start` (line `line`) on, in order."""
        for lines, first, end, after in self.spans(start, size, line):
            frame = rows.read_frame(self.head, b"".join(lines), self.header, first_line=first)
            yield Chunk(frame, end, after)

    def spans(
        self, start: int, size: int, line: int = 2
    ) -> Iterator[tuple[list[bytes], int, int, int]]:
        """Every `size` records from byte `start` (line `line`) on, unparsed: their lines, the
        line they start at, the offset after them and the line that follows. A line end
        inside quotes belongs to its field, so a record is never split."""
        with self.path.open("rb") as handle:
            handle.seek(start)
            lines: list[bytes] = []
            offset, records, quoted, pending, first = start, 0, 0, 0, line
            opened = line  # the line the record being read starts at
            for text in handle:
                if not quoted:
                    opened = line
                lines.append(text)
                offset += len(text)
                line += 1
                if b'"' in text:
                    quoted ^= text.count(b'"') & 1
                if quoted:
                    # A line end inside quotes: the record goes on.
                    pending += len(text)
                    if pending > MAX_RECORD_BYTES:
                        raise unclosed_quote(opened)
                    continue
                pending = 0
                records += 1
                if records == size:
                    yield lines, first, offset, line
                    lines, records, first = [], 0, line
            if quoted:
                raise ends_quoted(opened)
            if lines:
                yield lines, first, offset, line


@dataclass(frozen=True)
class Chunk:
    """Some records as text cells, the input offset after them and the line that follows."""

    frame: pd.DataFrame
    end: int
    line: int


@dataclass
class Checkpoint:
    """How far a run went: the input read and the output written, both committed."""

    input: str
    input_size: int
    header: list[str]
    endpoint: str
    id_column: str
    log: bool
    columns: list[str]
    input_offset: int
    output_offset: int
    line: int
    rows: int = 0
    # `flask score --engine dask`: partitions of `partition_rows` records, `partitions` of
    # them written so far (the local engine leaves these as they are).
    engine: str = "local"
    partition_rows: int = 0
    partitions: int = 0

    @staticmethod
    def path_for(output: Path) -> Path:
        """Where the checkpoint of an output file lives."""
        return output.with_name(output.name + ".resume")

    @classmethod
    def load(cls, output: Path) -> Checkpoint | None:
        """The checkpoint of an unfinished run into `output`, if there is one."""
        path = cls.path_for(output)
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise Refused(f"{path} is damaged ({exc}); delete it and pass --restart") from exc

    def save(self, output: Path) -> None:
        """Write the checkpoint atomically: a crash leaves the old one or the new one."""
        path = self.path_for(output)
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def differences(self, other: Checkpoint) -> list[str]:
        """What differs between this run's settings and the interrupted one's."""
        keys = (
            "input",
            "input_size",
            "header",
            "endpoint",
            "id_column",
            "log",
            "columns",
            "engine",
            "partition_rows",
        )
        return [key for key in keys if getattr(self, key) != getattr(other, key)]


@dataclass
class Summary:
    """What a run did, added up over its chunks."""

    rows: int = 0
    answered: int = 0
    stored: int = 0
    replayed: int = 0
    invalid: int = 0
    conflicts: int = 0
    resumed_at: int = 0
    seconds: float = 0.0

    def add(self, results: Results) -> None:
        """Count one chunk's results."""
        self.add_counts(results.counts())

    def add_counts(self, counts: dict[str, int]) -> None:
        """Count one chunk's results, as `Results.counts` gives them."""
        for key, value in counts.items():
            setattr(self, key, getattr(self, key) + value)


def score_file(
    source: Path,
    output: Path,
    endpoint: str,
    prepare: Callable[[rows.Rows], PreparedBatch],
    columns: list[str],
    log: bool = True,
    id_column: str = rows.ID_COLUMN,
    chunk_rows: int = 10_000,
    restart: bool = False,
    progress: bool = True,
) -> Summary:
    """Score every row of `source` into `output`, resuming an interrupted run into the same
    output unless `restart`. `prepare` routes, checks and scores a chunk's rows
    (`dataplane.prepare_many`, whose plane says whether they are stored); `columns` are the
    output's."""
    began = time.monotonic()
    reader = CsvReader(source)
    if id_column not in reader.header:
        raise Refused(f"{source} has no {id_column!r} column; name the id column with --id-column")
    fresh = Checkpoint(
        input=str(source.resolve()),
        input_size=reader.size,
        header=reader.header,
        endpoint=endpoint,
        id_column=id_column,
        log=log,
        columns=columns,
        input_offset=reader.data_start,
        output_offset=0,
        line=2,
    )
    checkpoint = resumable(output, fresh, restart)
    summary = Summary(resumed_at=checkpoint.rows if checkpoint else 0)
    state = checkpoint or fresh
    chunks = reader.chunks(state.input_offset, chunk_rows, state.line)

    def prepared(chunk: Chunk) -> tuple[PreparedBatch, Chunk]:
        return prepare(rows.csv_rows(chunk.frame, reader.header, id_column)), chunk

    # The first chunk is checked before the output is touched: a column the model needs and
    # the file lacks stops the run with nothing written.
    first = next(chunks, None)
    pending = prepared(first) if first is not None else None
    handle = open_output(output, state, columns)
    try:
        bar = Progress(reader.size, state.input_offset, enabled=progress)
        writer = _Writer(handle, output, state, columns, log, bar, summary)
        writer.start()
        try:
            if pending is not None:
                writer.put(pending)
            for chunk in chunks:
                if writer.failed:
                    break
                writer.put(prepared(chunk))
        finally:
            writer.finish()
    finally:
        handle.close()
    Checkpoint.path_for(output).unlink(missing_ok=True)
    bar.update(0, reader.size, final=True)
    summary.seconds = time.monotonic() - began
    return summary


def resumable(output: Path, fresh: Checkpoint, restart: bool) -> Checkpoint | None:
    """The checkpoint of the interrupted run into `output` to resume (None: start afresh);
    refused when `output` exists with nothing to resume, or the run had other settings."""
    checkpoint = None if restart else Checkpoint.load(output)
    if checkpoint is None and output.exists() and not restart:
        raise Refused(
            f"{output} exists and no interrupted run into it is left to resume; "
            "delete it, choose another name, or pass --restart to write it again"
        )
    if checkpoint is not None and (changed := checkpoint.differences(fresh)):
        raise Refused(
            f"{output} belongs to an interrupted run with another {', '.join(changed)}; "
            "resume it with the same input and options, or pass --restart"
        )
    return checkpoint


def open_output(output: Path, state: Checkpoint, columns: list[str]) -> BinaryIO:
    """The output file, positioned after what the checkpoint says was written."""
    if state.rows == 0:
        header = render.csv_header(columns).encode("utf-8")
        # The checkpoint first: killed before the header is written, the run starts over.
        state.output_offset = len(header)
        state.save(output)
        handle: BinaryIO = output.open("wb")
        handle.write(header)
        handle.flush()
        return handle
    if not output.exists() or output.stat().st_size < state.output_offset:
        raise Refused(
            f"{output} is shorter than its checkpoint says it was written; pass --restart"
        )
    handle = output.open("r+b")
    # Whatever follows the checkpoint was not acknowledged: it is written again.
    handle.truncate(state.output_offset)
    handle.seek(state.output_offset)
    return handle


class _Writer(threading.Thread):
    """Stores each prepared chunk, appends its answers, then moves the checkpoint on."""

    def __init__(
        self,
        handle: Any,
        output: Path,
        state: Checkpoint,
        columns: list[str],
        log: bool,
        bar: Progress,
        summary: Summary,
    ):
        super().__init__(name="batch-writer", daemon=True)
        self._handle, self._output, self._state = handle, output, state
        self._columns, self._log, self._bar, self._summary = columns, log, bar, summary
        # One chunk waiting while one is written: memory stays at a few chunks.
        self._queue: queue.Queue[tuple[PreparedBatch, Chunk] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None

    @property
    def failed(self) -> bool:
        """Whether writing stopped on an error."""
        return self._error is not None

    def put(self, item: tuple[PreparedBatch, Chunk]) -> None:
        """Hand over a prepared chunk."""
        self._queue.put(item)

    def finish(self) -> None:
        """Wait for every chunk handed over; raise what stopped the writing, if anything."""
        self._queue.put(None)
        self.join()
        if self._error is not None:
            raise self._error

    def run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if self._error is None:
                    self._write(*item)
        except BaseException as exc:  # handed to the main thread by finish()
            self._error = exc
            while self._queue.get() is not None:
                pass
        finally:
            if self._log and not db.is_closed():
                db.close()

    def _write(self, prepared: PreparedBatch, chunk: Chunk) -> None:
        results = prepared.commit()
        self._handle.write(render.csv_text(results, self._columns).encode("utf-8"))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        state = self._state
        state.input_offset, state.output_offset = chunk.end, self._handle.tell()
        state.line = chunk.line
        state.rows += len(results)
        state.save(self._output)
        self._summary.add(results)
        self._bar.update(len(results), chunk.end)
