"""The peewee tables the service writes; their shape is built by `serving.store.migrations`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import peewee

from serving.store.database import db


def utcnow() -> dt.datetime:
    """Naive UTC, the one timezone every stored timestamp is in."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def iso(value: Any) -> str | None:
    """A stored timestamp as the API shows it: ISO 8601 in UTC with a Z."""
    if value is None:
        return None
    # SQLite hands back text for timestamps written by another driver; both print alike.
    return value.isoformat() + "Z" if hasattr(value, "isoformat") else f"{value}Z"


class BaseTable(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


class Prediction(BaseTable):
    """One scored observation. Labels and observations are stored as JSON text, portable to
    SQLite and PostgreSQL alike and compared as canonical strings.

    On PostgreSQL the table is partitioned by month of `created_at` (`serving.store.partitions`),
    its primary key (id, created_at); an id is unique per endpoint through `PredictionKey`,
    never through this table: write rows with `predictions.save`, which keeps both."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    model_version = peewee.CharField(max_length=100)
    observation_id = peewee.CharField(max_length=255)
    observation = peewee.TextField()
    proba = peewee.DoubleField(null=True)
    prediction = peewee.TextField(null=True)
    true_class = peewee.TextField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(null=True)
    # Added by migration 2: every class's probability (multi-class), the regression value.
    probabilities = peewee.TextField(null=True)
    value = peewee.DoubleField(null=True)
    # Added by migration 4: the A/B test (ab_test.id) and arm ("A" or "B") that chose the version.
    ab_test = peewee.BigIntegerField(null=True)
    arm = peewee.CharField(max_length=1, null=True)

    class Meta:
        table_name = "prediction"
        indexes = (
            (("endpoint", "model_version", "created_at"), False),
            (("ab_test", "arm"), False),
        )


class PredictionKey(BaseTable):
    """The one uniqueness of an observation id: (endpoint, observation id) to the stored row's
    id and time, which find the row in its partition. Unpartitioned, so unique across all
    time; a key goes when `flask prune-predictions` drops its row, and the id is free again."""

    id = peewee.BigIntegerField()
    endpoint = peewee.CharField(max_length=100)
    observation_id = peewee.CharField(max_length=255)
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "prediction_key"
        primary_key = peewee.CompositeKey("endpoint", "observation_id")


class VersionStatus(BaseTable):
    """One status change of a model version; the latest row per version is its status."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    version = peewee.CharField(max_length=100)
    status = peewee.CharField(max_length=20)
    previous = peewee.CharField(max_length=20, null=True)
    changed_by = peewee.CharField(max_length=200)
    reason = peewee.TextField(null=True)
    changed_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "version_status"
        indexes = ((("endpoint", "version", "id"), False),)


class AbTest(BaseTable):
    """An A/B test between two versions of one endpoint; `split` is the share sent to B."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    name = peewee.CharField(max_length=200, null=True)
    version_a = peewee.CharField(max_length=100)
    version_b = peewee.CharField(max_length=100)
    split = peewee.DoubleField()
    state = peewee.CharField(max_length=20)  # running, stopped
    started_at = peewee.DateTimeField(default=utcnow)
    started_by = peewee.CharField(max_length=200)
    ended_at = peewee.DateTimeField(null=True)
    ended_by = peewee.CharField(max_length=200, null=True)
    verdict = peewee.CharField(max_length=40, null=True)
    winner = peewee.CharField(max_length=100, null=True)
    summary = peewee.TextField(null=True)  # JSON, the comparison as it stood when stopped

    class Meta:
        table_name = "ab_test"
        indexes = ((("endpoint", "state"), False),)


class ShadowVersion(BaseTable):
    """One change of a version's shadow flag; the latest row per version is in force."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    version = peewee.CharField(max_length=100)
    enabled = peewee.BooleanField()
    changed_by = peewee.CharField(max_length=200)
    reason = peewee.TextField(null=True)
    changed_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "shadow_version"
        indexes = ((("endpoint", "version", "id"), False),)


class ApiKey(BaseTable):
    """A client's API key for the prediction routes, kept as the sha256 of the key only: the
    key itself is shown once, when it is created."""

    id = peewee.BigAutoField()
    name = peewee.CharField(max_length=100, unique=True)
    key_hash = peewee.CharField(max_length=64, unique=True)
    created_by = peewee.CharField(max_length=200)
    created_at = peewee.DateTimeField(default=utcnow)
    revoked_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "api_key"


class ShadowScore(BaseTable):
    """What a shadow version would have answered for a stored prediction."""

    id = peewee.BigAutoField()
    prediction_id = peewee.BigIntegerField()
    endpoint = peewee.CharField(max_length=100)
    model_version = peewee.CharField(max_length=100)
    proba = peewee.DoubleField(null=True)
    prediction = peewee.TextField(null=True)
    probabilities = peewee.TextField(null=True)
    value = peewee.DoubleField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "shadow_score"
        indexes = (
            (("prediction_id", "model_version"), True),
            (("endpoint", "model_version"), False),
        )


class PublishedVersion(BaseTable):
    """A model version published to the running deployment (PUT /api/v1/<endpoint>/versions/
    <version>, `flask models push`): who published it and when. Its files are PublishedFile
    rows; a version is published once and never overwritten."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    version = peewee.CharField(max_length=100)
    published_by = peewee.CharField(max_length=200)
    published_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "published_version"
        indexes = ((("endpoint", "version"), True),)


class PublishedFile(BaseTable):
    """One file of a published version, its bytes (BLOB on SQLite, bytea on PostgreSQL) and
    their sha256 as checked at upload; every load checks the bytes against it again."""

    id = peewee.BigAutoField()
    published_version = peewee.BigIntegerField()
    name = peewee.CharField(max_length=100)
    sha256 = peewee.CharField(max_length=64)
    size = peewee.BigIntegerField()
    content = peewee.BlobField()

    class Meta:
        table_name = "published_file"
        indexes = ((("published_version", "name"), True),)


class RollupState(BaseTable):
    """Where the hourly rollups stand (one row, id 1): every hour before `sealed_hour` (hours
    since the Unix epoch) is rolled up, with every ground truth recorded before `labels_from`."""

    id = peewee.IntegerField(primary_key=True)
    sealed_hour = peewee.BigIntegerField(null=True)
    labels_from = peewee.DateTimeField(null=True)
    folded_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "rollup_state"


class RollupCount(BaseTable):
    """Predictions of one version in one hour (hours since the Unix epoch, UTC), and how
    many of them have their ground truth."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    model_version = peewee.CharField(max_length=100)
    hour = peewee.BigIntegerField()
    predictions = peewee.BigIntegerField()
    labelled = peewee.BigIntegerField()

    class Meta:
        table_name = "rollup_count"
        indexes = ((("endpoint", "model_version", "hour"), True), (("hour",), False))


class RollupBinary(BaseTable):
    """Labelled predictions of a binary classifier's version in one hour, grouped by
    probability bucket (FLOOR(proba * AUC_BUCKETS)), stored truth and stored label, with the
    sums behind log loss and Brier score for either truth (`pos`: the truth is the positive
    class, `neg`: it is not; the model, not the rollup, knows which class is positive)."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    model_version = peewee.CharField(max_length=100)
    hour = peewee.BigIntegerField()
    bucket = peewee.IntegerField()
    truth = peewee.TextField()
    predicted = peewee.TextField(null=True)
    rows = peewee.BigIntegerField()
    proba_sum = peewee.DoubleField()
    log_loss_pos = peewee.DoubleField()
    log_loss_pos_squares = peewee.DoubleField()
    log_loss_neg = peewee.DoubleField()
    log_loss_neg_squares = peewee.DoubleField()
    brier_pos = peewee.DoubleField()
    brier_pos_squares = peewee.DoubleField()
    brier_neg = peewee.DoubleField()
    brier_neg_squares = peewee.DoubleField()

    class Meta:
        table_name = "rollup_binary"
        indexes = ((("endpoint", "model_version", "hour"), False), (("hour",), False))


class RollupBinaryDaily(BaseTable):
    """`rollup_binary` summed over whole days (`day`: days since the Unix epoch, UTC): a
    long time range reads a few thousand groups per day instead of per hour."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    model_version = peewee.CharField(max_length=100)
    day = peewee.BigIntegerField()
    bucket = peewee.IntegerField()
    truth = peewee.TextField()
    predicted = peewee.TextField(null=True)
    rows = peewee.BigIntegerField()
    proba_sum = peewee.DoubleField()
    log_loss_pos = peewee.DoubleField()
    log_loss_pos_squares = peewee.DoubleField()
    log_loss_neg = peewee.DoubleField()
    log_loss_neg_squares = peewee.DoubleField()
    brier_pos = peewee.DoubleField()
    brier_pos_squares = peewee.DoubleField()
    brier_neg = peewee.DoubleField()
    brier_neg_squares = peewee.DoubleField()

    class Meta:
        table_name = "rollup_binary_daily"
        indexes = ((("endpoint", "model_version", "day"), False), (("day",), False))


class RollupRegression(BaseTable):
    """Labelled predictions of a regression's version in one hour: the sums `quality`
    measures a regression with (null where no row was measurable)."""

    id = peewee.BigAutoField()
    endpoint = peewee.CharField(max_length=100)
    model_version = peewee.CharField(max_length=100)
    hour = peewee.BigIntegerField()
    rows = peewee.BigIntegerField()
    abs_error_sum = peewee.DoubleField(null=True)
    squared_error_sum = peewee.DoubleField(null=True)
    squared_error_squares = peewee.DoubleField(null=True)
    big_errors = peewee.BigIntegerField(null=True)
    truth_sum = peewee.DoubleField(null=True)
    truth_squares = peewee.DoubleField(null=True)
    unmeasurable = peewee.BigIntegerField(null=True)

    class Meta:
        table_name = "rollup_regression"
        indexes = ((("endpoint", "model_version", "hour"), True), (("hour",), False))
