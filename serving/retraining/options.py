"""What a retrain is asked to do (`flask retrain`'s options, the retrain call's fields) and
their defaults: checked before anything is read or loaded. Kept apart from the job, which needs
pandas and scikit-learn, so that the command line and the routes can be set up without them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from serving.errors import InvalidInput, detail

DEFAULT_MIN_LABELLED = 500
DEFAULT_HOLDOUT_FRACTION = 0.2
SHADOW, NONE, AB = "shadow", "none", "ab"
RETRAIN_BY = "retrain"


@dataclass(frozen=True)
class Options:
    """What a retrain is asked to do; `check` refuses nonsense naming the field."""

    holdout_fraction: float | None = None
    holdout_rows: int | None = None
    min_labelled: int = DEFAULT_MIN_LABELLED
    include_training_data: bool = False
    # "shadow", "none", or "ab:<split>" (the share of traffic sent to the candidate).
    then: str = SHADOW
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    by: str = RETRAIN_BY

    def check(self) -> None:
        """Raise InvalidInput naming the first option that cannot be run."""
        fraction, count = self.holdout_fraction, self.holdout_rows
        if fraction is not None and count is not None:
            raise InvalidInput(
                "Give the holdout as a fraction or as a number of rows, not both.",
                [detail("holdout_rows", "given with holdout_fraction")],
            )
        if fraction is not None and not (_number(fraction) and 0 < fraction < 1):
            raise InvalidInput(
                "'holdout_fraction' must be a number between 0 and 1 (exclusive).",
                [detail("holdout_fraction", f"expected 0 < fraction < 1, got {fraction!r}")],
            )
        if count is not None and not (_integer(count) and count >= 1):
            raise InvalidInput(
                "'holdout_rows' must be a whole number of at least 1.",
                [detail("holdout_rows", f"expected an integer >= 1, got {count!r}")],
            )
        if not (_integer(self.min_labelled) and self.min_labelled >= 2):
            raise InvalidInput(
                "'min_labelled' must be a whole number of at least 2.",
                [detail("min_labelled", f"expected an integer >= 2, got {self.min_labelled!r}")],
            )
        if not isinstance(self.include_training_data, bool):
            raise InvalidInput(
                "'include_training_data' must be true or false.",
                [detail("include_training_data", "expected a boolean")],
            )
        self.next_step()
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput(
                "'since' must be before 'until'.", [detail("since", "not before until")]
            )

    def next_step(self) -> tuple[str, float | None]:
        """What follows a registration: (shadow | none | ab, the A/B split or None)."""
        then = self.then
        if then in (SHADOW, NONE):
            return then, None
        if isinstance(then, str) and then.startswith(f"{AB}:"):
            try:
                split = float(then[len(AB) + 1 :])
            except ValueError:
                split = float("nan")
            if 0 < split < 1:
                return AB, split
        raise InvalidInput(
            "'then' must be 'shadow', 'none' or 'ab:<split>' with 0 < split < 1 (the share "
            "of traffic the candidate gets).",
            [detail("then", f"expected shadow, none or ab:<split>, got {then!r}")],
        )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_instant(raw: Any, field_name: str) -> dt.datetime | None:
    """An ISO 8601 time as naive UTC (no offset means UTC); None for None or ""."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise InvalidInput(
            f"'{field_name}' must be an ISO 8601 time, e.g. 2026-11-24T10:00:00Z.",
            [detail(field_name, f"expected a string, got {type(raw).__name__}")],
        )
    try:
        value = dt.datetime.fromisoformat(raw)
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"'{field_name}' must be an ISO 8601 time, e.g. 2026-11-24T10:00:00Z.",
            [detail(field_name, f"not an ISO 8601 time: {raw!r}")],
        ) from None
    return value
