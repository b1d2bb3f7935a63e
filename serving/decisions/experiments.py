"""A/B tests: deterministic assignment, live comparison of the arms, and a stop that promotes.

An observation id lands in arm B when a hash of the test's id and the observation id falls
below the split; the same id always lands on the same arm, in every worker and replica,
without any shared state but the test row. Each process caches the running tests for a few
seconds, as it caches statuses, so a started or stopped test reaches every worker that fast.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from serving.decisions.lifecycle import (
    ARCHIVED,
    PRODUCTION,
    TESTING,
    Lifecycle,
    apply_change,
    lock_statuses,
)
from serving.errors import Conflict, InvalidInput, NotFound, detail
from serving.model.registry import Registry
from serving.protocol.payloads import MAX_BY_LENGTH, id_key
from serving.reports import statistics
from serving.reports.quality import Measurement, logged, measure
from serving.store.database import unit_of_work
from serving.store.refreshing import Refreshing
from serving.store.tables import AbTest, iso, utcnow

RUNNING, STOPPED = "running", "stopped"
ARMS = ("A", "B")
# Below this many labelled rows per arm no verdict is called, whatever the p-value: the
# normal approximation behind the z-test is poor on a handful of rows.
MIN_LABELLED_PER_ARM = 30
A_BETTER, B_BETTER, NOT_YET, NO_LABELLED_DATA = (
    "A better",
    "B better",
    "not yet significant",
    "no labelled data",
)


def assign(test_id: int, observation_id: str | int, split: float) -> str:
    """The arm of an observation: B for a `split` share of ids, A for the rest."""
    digest = hashlib.sha256(f"{test_id}:{id_key(observation_id)}".encode()).digest()
    return "B" if int.from_bytes(digest[:8], "big") / 2**64 < split else "A"


@dataclass(frozen=True)
class RunningTest:
    """What routing needs to know about a running test."""

    id: int
    endpoint: str
    version_a: str
    version_b: str
    split: float

    def route(self, observation_id: str | int) -> tuple[str, str]:
        """(arm, version) for an observation id."""
        arm = assign(self.id, observation_id, self.split)
        return arm, self.version_a if arm == "A" else self.version_b


class Experiments:
    """Starts, reads and stops A/B tests; running tests are cached for `refresh_seconds`."""

    def __init__(self, registry: Registry, lifecycle: Lifecycle, refresh_seconds: float):
        self._registry = registry
        self._lifecycle = lifecycle
        self._running: Refreshing[dict[str, RunningTest]] = Refreshing(
            _read_running, refresh_seconds, {}
        )

    def running(self, endpoint: str) -> RunningTest | None:
        """The endpoint's running test, at most `refresh_seconds` old."""
        return self._running.get().get(endpoint)

    def start(
        self,
        endpoint: str,
        version_a: Any,
        version_b: Any,
        split: Any = 0.5,
        name: Any = None,
        by: str = "admin-api",
    ) -> dict[str, Any]:
        """Start a test between two served versions; 404 naming a version the endpoint does
        not have, 409 if the endpoint already runs a test."""
        versions = self._registry.endpoint(endpoint)
        for field, version in (("version_a", version_a), ("version_b", version_b)):
            if not isinstance(version, str):
                raise InvalidInput(
                    f"'{field}' must name a version of {endpoint!r}.",
                    [detail(field, f"expected one of {sorted(versions)}, got {version!r}")],
                )
            if version not in versions:
                raise NotFound(
                    f"Endpoint {endpoint!r} has no version {version!r}.",
                    [detail(field, f"unknown; known: {sorted(versions)}")],
                )
        if version_a == version_b:
            raise InvalidInput(
                "An A/B test needs two different versions.",
                [detail("version_b", "same as version_a")],
            )
        if isinstance(split, bool) or not isinstance(split, int | float) or not 0 < split < 1:
            raise InvalidInput(
                "'split' must be a number between 0 and 1 (exclusive): the share of traffic "
                "sent to version B.",
                [detail("split", f"expected 0 < split < 1, got {split!r}")],
            )
        statuses = self._lifecycle.statuses()
        for field, version in (("version_a", version_a), ("version_b", version_b)):
            if statuses.get((endpoint, version)) == ARCHIVED:
                raise Conflict(
                    f"Version {version!r} is archived; change its status before testing it.",
                    [detail(field, "archived")],
                )
        test = _start(endpoint, name, version_a, version_b, float(split), by)
        self._running.forget()
        return self.describe(test)

    def find(self, endpoint: str, test_id: int) -> AbTest:
        """One test of an endpoint, or NotFound."""
        self._registry.endpoint(endpoint)
        # Ids are 64-bit: a larger number names no test (the driver would raise, a 500).
        test = _find(endpoint, test_id) if 0 <= test_id < 2**63 else None
        if test is None:
            raise NotFound(
                f"Endpoint {endpoint!r} has no A/B test {test_id}.",
                [detail("test_id", "unknown")],
            )
        return test

    def list(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Tests (of one endpoint, or all), newest first, each with its comparison."""
        return [self.describe(test) for test in _tests(endpoint)]

    def describe(self, test: AbTest) -> dict[str, Any]:
        """A test as the API shows it: live figures while running, the stored summary after."""
        if test.state == STOPPED and test.summary:
            return json.loads(test.summary)
        return self._summary(test)

    def stop(
        self,
        endpoint: str,
        test_id: int,
        winner: Any = None,
        promote: Any = True,
        by: str = "admin-api",
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Stop a running test and store its summary. The winner (the significant verdict's,
        or `winner` when forced) goes to production and the other version to testing; with
        no significant verdict and nothing forced, statuses stay as they are."""
        if winner is not None and winner not in ARMS:
            raise InvalidInput(
                '\'winner\' forces a winner and must be "A" or "B".',
                [detail("winner", f"expected 'A' or 'B', got {winner!r}")],
            )
        if not isinstance(promote, bool):
            raise InvalidInput("'promote' must be true or false.", [detail("promote", "boolean")])
        test = self.find(endpoint, test_id)
        if test.state != RUNNING:
            raise Conflict(
                f"A/B test {test_id} is already stopped.", [detail("test_id", "stopped")]
            )
        summary = self._summary(test)
        chosen = winner or _ARM_OF.get(summary["verdict"]["result"])
        promoted = bool(promote and chosen)
        # Within the history's 200 characters, however long `by` is.
        suffix = f" (A/B test {test.id})"
        by_whom = by[: MAX_BY_LENGTH - len(suffix)] + suffix

        _stop(test, summary, chosen, promoted, winner, reason, by, by_whom)
        self._running.forget()
        self._lifecycle.forget()
        return summary

    def _summary(self, test: AbTest) -> dict[str, Any]:
        arms: dict[str, Measurement] = {}
        for arm, version in (("A", test.version_a), ("B", test.version_b)):
            model = self._registry.find(test.endpoint, version)
            if model is None:
                raise Conflict(
                    f"Version {version!r} of A/B test {test.id} is not served by this process.",
                    [detail("version", "not loaded")],
                )
            arms[arm] = measure(model, logged(test.endpoint, version, ab_test=test.id, arm=arm))
        return {
            "id": test.id,
            "endpoint": test.endpoint,
            "name": test.name,
            "state": test.state,
            "split": test.split,
            "started_at": iso(test.started_at),
            "started_by": test.started_by,
            "ended_at": iso(test.ended_at),
            "ended_by": test.ended_by,
            "arms": {
                arm: {
                    "version": test.version_a if arm == "A" else test.version_b,
                    "requests": m.predictions,
                    "labelled": m.labelled,
                    "metrics": {name: e.to_json() for name, e in m.estimates.items()},
                }
                for arm, m in arms.items()
            },
            "verdict": verdict(arms["A"], arms["B"]),
            "winner": test.winner,
        }


_ARM_OF = {A_BETTER: "A", B_BETTER: "B"}


def verdict(a: Measurement, b: Measurement) -> dict[str, Any]:
    """Which arm is better on its labelled rows, by a stated test, and how many rows per arm
    the observed difference needs. Classifiers: a two-proportion z-test on accuracy.
    Regressions: Welch's t-test on absolute error."""
    if a.task == "regression":
        result = _welch(a, b)
        mae_a, mae_b = a.metrics.get("mae"), b.metrics.get("mae")
        pooled = _pooled_variance(a, b)
        needed = (
            statistics.rows_per_arm_for_means(mae_a, mae_b, pooled)
            if mae_a is not None and mae_b is not None and pooled is not None
            else None
        )
    else:
        result = statistics.two_proportions(a.correct, a.labelled, b.correct, b.labelled)
        rate_a, rate_b = a.metrics.get("accuracy"), b.metrics.get("accuracy")
        needed = (
            statistics.rows_per_arm_for_proportions(rate_a, rate_b)
            if rate_a is not None and rate_b is not None
            else None
        )
    if a.labelled == 0 or b.labelled == 0:
        outcome = NO_LABELLED_DATA
    elif (
        result.significant
        and min(a.labelled, b.labelled) >= MIN_LABELLED_PER_ARM
        and result.better is not None
    ):
        outcome = A_BETTER if result.better == "A" else B_BETTER
    else:
        outcome = NOT_YET
    return {
        "result": outcome,
        "test": result.test,
        "statistic": result.statistic,
        "p_value": result.p_value,
        "alpha": statistics.ALPHA,
        "power": statistics.POWER,
        "required_per_arm": needed,
        "min_labelled_per_arm": MIN_LABELLED_PER_ARM,
    }


def _variance(m: Measurement) -> float | None:
    n = m.labelled
    # Rows beyond the measurable range are in no sum: the sums do not describe the arm.
    if n < 2 or m.unmeasurable:
        return None
    average = m.abs_error_sum / n
    return max(0.0, (m.abs_error_squares - n * average * average) / (n - 1))


def _pooled_variance(a: Measurement, b: Measurement) -> float | None:
    va, vb = _variance(a), _variance(b)
    if va is None or vb is None:
        return None
    return ((a.labelled - 1) * va + (b.labelled - 1) * vb) / (a.labelled + b.labelled - 2)


def _welch(a: Measurement, b: Measurement) -> statistics.TestResult:
    va, vb = _variance(a), _variance(b)
    if va is None or vb is None:
        return statistics.TestResult("Welch's t-test on absolute error", None, None, None)
    return statistics.welch(
        a.abs_error_sum / a.labelled, va, a.labelled, b.abs_error_sum / b.labelled, vb, b.labelled
    )


@unit_of_work(write=True)
def _stop(
    test: AbTest,
    summary: dict[str, Any],
    chosen: str | None,
    promoted: bool,
    winner: str | None,
    reason: str | None,
    by: str,
    by_whom: str,
) -> None:
    """Stop a test, and promote its winner, in one transaction taking turns with status
    changes."""
    lock_statuses()
    fresh = AbTest.get_by_id(test.id)
    if fresh.state != RUNNING:
        raise Conflict(f"A/B test {test.id} is already stopped.", [detail("test_id", "stopped")])
    if promoted:
        won = test.version_a if chosen == "A" else test.version_b
        lost = test.version_b if chosen == "A" else test.version_a
        why = reason or (
            f"forced winner of A/B test {test.id}"
            if winner
            else f"won A/B test {test.id}: {summary['verdict']['result']}"
        )
        apply_change(test.endpoint, won, PRODUCTION, by_whom, why)
        apply_change(test.endpoint, lost, TESTING, by_whom, f"lost A/B test {test.id}")
    summary.update(
        state=STOPPED,
        ended_at=iso(utcnow()),
        ended_by=by,
        winner=(test.version_a if chosen == "A" else test.version_b) if chosen else None,
        forced=winner is not None,
        promoted=promoted,
        reason=reason,
    )
    AbTest.update(
        state=STOPPED,
        ended_at=utcnow(),
        ended_by=by,
        verdict=summary["verdict"]["result"],
        winner=summary["winner"],
        summary=json.dumps(summary),
    ).where(AbTest.id == test.id).execute()


@unit_of_work(write=True)
def _start(
    endpoint: str, name: Any, version_a: str, version_b: str, split: float, by: str
) -> AbTest:
    lock_statuses()
    if AbTest.get_or_none((AbTest.endpoint == endpoint) & (AbTest.state == RUNNING)):
        raise Conflict(
            f"Endpoint {endpoint!r} already runs an A/B test; stop it first.",
            [detail("endpoint", "an A/B test is running")],
        )
    return AbTest.create(
        endpoint=endpoint,
        name=name,
        version_a=version_a,
        version_b=version_b,
        split=split,
        state=RUNNING,
        started_by=by,
    )


@unit_of_work()
def _find(endpoint: str, test_id: int) -> AbTest | None:
    return AbTest.get_or_none((AbTest.id == test_id) & (AbTest.endpoint == endpoint))


@unit_of_work()
def _tests(endpoint: str | None) -> list[AbTest]:
    query = AbTest.select().order_by(AbTest.id.desc())
    if endpoint is not None:
        query = query.where(AbTest.endpoint == endpoint)
    return list(query)


def _read_running() -> dict[str, RunningTest]:
    return {
        t.endpoint: RunningTest(t.id, t.endpoint, t.version_a, t.version_b, t.split)
        for t in AbTest.select().where(AbTest.state == RUNNING)
    }
