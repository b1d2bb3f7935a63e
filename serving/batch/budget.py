"""A batch request's CPU budget, checked between the stages that come before storing.

gunicorn's gthread workers never time a request out, so a batch built to be slow (a wide
CSV, many models' worth of routing) would hold a thread and a core for as long as it takes.
The budget counts the CPU time of the request's own thread: waiting for the database or for
other requests' threads does not use it up, only the work this request causes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from serving.errors import PayloadTooLarge, detail


class CpuBudget:
    """At most `seconds` of this thread's CPU from now on (0 or less: no limit)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.thread_time):
        self.seconds = seconds
        self._clock = clock
        self._start = clock()

    def spent(self) -> float:
        """CPU seconds this thread spent since the budget was made."""
        return self._clock() - self._start

    def check(self, stage: str) -> None:
        """Refuse the request (413, before anything is stored) once the budget is spent;
        `stage` names what was just done, for the details."""
        if self.seconds <= 0:
            return
        spent = self.spent()
        if spent > self.seconds:
            raise PayloadTooLarge(
                f"The batch needed more than {self.seconds:g} CPU seconds (BATCH_CPU_SECONDS) "
                "before it could be stored; nothing was stored. Split it, or score the file "
                "with `flask score`.",
                [detail("batch", f"{spent:.1f} CPU seconds spent by the end of {stage}")],
            )
