"""A one-line progress bar on stderr: rows done, rows per second, share of the file, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one line in place on a terminal; elsewhere (a log, a pipe) prints a line now
    and then instead."""

    def __init__(
        self,
        total_bytes: int,
        done_bytes: int = 0,
        stream: TextIO | None = None,
        enabled: bool = True,
        every: float | None = None,
    ):
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = self._stream.isatty()
        self._every = every if every is not None else (0.2 if self._tty else 10.0)
        self._total = max(total_bytes, 1)
        self._start_bytes = done_bytes
        self._began = time.monotonic()
        self._shown = float("-inf")
        self.rows = 0

    def update(self, rows: int, done_bytes: int, final: bool = False) -> None:
        """Record `rows` more rows done and the input read up to `done_bytes`."""
        self.rows += rows
        now = time.monotonic()
        if not self._enabled or (not final and now - self._shown < self._every):
            return
        self._shown = now
        elapsed = max(now - self._began, 1e-9)
        rate = self.rows / elapsed
        share = min(done_bytes / self._total, 1.0)
        moved = done_bytes - self._start_bytes
        left = (self._total - done_bytes) * elapsed / moved if moved > 0 else None
        line = (
            f"{self.rows:,} rows  {rate:,.0f} rows/s  {share:6.1%}  "
            f"ETA {_clock(0 if final else left)}"
        )
        if self._tty:
            self._stream.write(f"\r{line}\033[K" + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
