"""Ordered schema migrations and a version row, applied once even when many workers start."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import peewee
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_schema

from serving.store import partitions
from serving.store.database import db, is_sqlite
from serving.store.tables import utcnow

logger = logging.getLogger(__name__)

# An arbitrary constant: every process migrating this database takes the same advisory lock.
_PG_LOCK_KEY = 7_402_113


class SchemaVersion(peewee.Model):
    version = peewee.IntegerField(primary_key=True)
    name = peewee.CharField(max_length=200)
    applied_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        database = db
        table_name = "schema_version"


def _create_prediction_table(database: peewee.Database) -> None:
    # A frozen copy of the table as this migration made it: later changes to
    # serving.store.tables must arrive as new migrations, not by editing this one.
    class Prediction(peewee.Model):
        id = peewee.BigAutoField()
        endpoint = peewee.CharField(max_length=100)
        model_version = peewee.CharField(max_length=100)
        observation_id = peewee.CharField(max_length=255)
        observation = peewee.TextField()
        proba = peewee.DoubleField(null=True)
        prediction = peewee.TextField(null=True)
        true_class = peewee.TextField(null=True)
        created_at = peewee.DateTimeField()
        updated_at = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "prediction"
            indexes = ((("endpoint", "observation_id"), True),)

    with database.bind_ctx([Prediction]):
        database.create_tables([Prediction], safe=False)


def _add_prediction_outputs(database: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(database)
    migrate_schema(
        migrator.add_column("prediction", "probabilities", peewee.TextField(null=True)),
        migrator.add_column("prediction", "value", peewee.DoubleField(null=True)),
    )


def _create_version_status_table(database: peewee.Database) -> None:
    class VersionStatus(peewee.Model):
        id = peewee.BigAutoField()
        endpoint = peewee.CharField(max_length=100)
        version = peewee.CharField(max_length=100)
        status = peewee.CharField(max_length=20)
        previous = peewee.CharField(max_length=20, null=True)
        changed_by = peewee.CharField(max_length=200)
        reason = peewee.TextField(null=True)
        changed_at = peewee.DateTimeField()

        class Meta:
            table_name = "version_status"
            indexes = ((("endpoint", "version", "id"), False),)

    with database.bind_ctx([VersionStatus]):
        database.create_tables([VersionStatus], safe=False)


def _add_experiments(database: peewee.Database) -> None:
    """A/B tests, shadow versions and their scores; each prediction row records its test and arm."""

    class AbTest(peewee.Model):
        id = peewee.BigAutoField()
        endpoint = peewee.CharField(max_length=100)
        name = peewee.CharField(max_length=200, null=True)
        version_a = peewee.CharField(max_length=100)
        version_b = peewee.CharField(max_length=100)
        split = peewee.DoubleField()
        state = peewee.CharField(max_length=20)
        started_at = peewee.DateTimeField()
        started_by = peewee.CharField(max_length=200)
        ended_at = peewee.DateTimeField(null=True)
        ended_by = peewee.CharField(max_length=200, null=True)
        verdict = peewee.CharField(max_length=40, null=True)
        winner = peewee.CharField(max_length=100, null=True)
        summary = peewee.TextField(null=True)

        class Meta:
            table_name = "ab_test"
            indexes = ((("endpoint", "state"), False),)

    class ShadowVersion(peewee.Model):
        id = peewee.BigAutoField()
        endpoint = peewee.CharField(max_length=100)
        version = peewee.CharField(max_length=100)
        enabled = peewee.BooleanField()
        changed_by = peewee.CharField(max_length=200)
        reason = peewee.TextField(null=True)
        changed_at = peewee.DateTimeField()

        class Meta:
            table_name = "shadow_version"
            indexes = ((("endpoint", "version", "id"), False),)

    class ShadowScore(peewee.Model):
        id = peewee.BigAutoField()
        prediction_id = peewee.BigIntegerField()
        endpoint = peewee.CharField(max_length=100)
        model_version = peewee.CharField(max_length=100)
        proba = peewee.DoubleField(null=True)
        prediction = peewee.TextField(null=True)
        probabilities = peewee.TextField(null=True)
        value = peewee.DoubleField(null=True)
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "shadow_score"
            indexes = (
                (("prediction_id", "model_version"), True),
                (("endpoint", "model_version"), False),
            )

    with database.bind_ctx([AbTest, ShadowVersion, ShadowScore]):
        database.create_tables([AbTest, ShadowVersion, ShadowScore], safe=False)
    migrator = SchemaMigrator.from_database(database)
    migrate_schema(
        migrator.add_column("prediction", "ab_test", peewee.BigIntegerField(null=True)),
        migrator.add_column("prediction", "arm", peewee.CharField(max_length=1, null=True)),
        # Quality queries filter by endpoint and version over a time range, or by test and arm.
        migrator.add_index("prediction", ("endpoint", "model_version", "created_at"), False),
        migrator.add_index("prediction", ("ab_test", "arm"), False),
    )


def _create_api_keys(database: peewee.Database) -> None:
    """Client API keys for the prediction routes, stored as sha256 hashes."""

    class ApiKey(peewee.Model):
        id = peewee.BigAutoField()
        name = peewee.CharField(max_length=100, unique=True)
        key_hash = peewee.CharField(max_length=64, unique=True)
        created_by = peewee.CharField(max_length=200)
        created_at = peewee.DateTimeField()
        revoked_at = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "api_key"

    with database.bind_ctx([ApiKey]):
        database.create_tables([ApiKey], safe=False)


def _create_published_versions(database: peewee.Database) -> None:
    """Model versions published to a running deployment, with their files' bytes."""

    class PublishedVersion(peewee.Model):
        id = peewee.BigAutoField()
        endpoint = peewee.CharField(max_length=100)
        version = peewee.CharField(max_length=100)
        published_by = peewee.CharField(max_length=200)
        published_at = peewee.DateTimeField()

        class Meta:
            table_name = "published_version"
            indexes = ((("endpoint", "version"), True),)

    class PublishedFile(peewee.Model):
        id = peewee.BigAutoField()
        # Not a foreign key: the version row and its files are written in one transaction
        # and never deleted, and the files are only read by their version's id.
        published_version = peewee.BigIntegerField()
        name = peewee.CharField(max_length=100)
        sha256 = peewee.CharField(max_length=64)
        size = peewee.BigIntegerField()
        content = peewee.BlobField()

        class Meta:
            table_name = "published_file"
            indexes = ((("published_version", "name"), True),)

    with database.bind_ctx([PublishedVersion, PublishedFile]):
        database.create_tables([PublishedVersion, PublishedFile], safe=False)


def _partition_predictions(database: peewee.Database) -> None:
    """Ids unique through a narrow key table; on PostgreSQL the log partitioned by month.

    A partitioned table's unique index must hold its partition column, so the unique
    (endpoint, observation_id) moves to `prediction_key` (the key, the row's id and its time),
    unpartitioned, on both databases alike: the store inserts the key first and the row only
    when the key was new. Every row moves with its id, so shadow scores still point at it.
    """
    if is_sqlite(database):
        # SQLite: the table stays; its rows get their keys, and AUTOINCREMENT on the key's id
        # means an id once handed out is never handed out again, even after pruning.
        database.execute_sql(
            "CREATE TABLE prediction_key (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "endpoint VARCHAR(100) NOT NULL, observation_id VARCHAR(255) NOT NULL, "
            "created_at DATETIME NOT NULL, UNIQUE (endpoint, observation_id))"
        )
        database.execute_sql(
            "INSERT INTO prediction_key (id, endpoint, observation_id, created_at) "
            "SELECT id, endpoint, observation_id, created_at FROM prediction ORDER BY id"
        )
        database.execute_sql("DROP INDEX prediction_endpoint_observation_id")
        # A row written into `prediction` around the store (a backfill in SQL) takes the next
        # rowid, which the key table's AUTOINCREMENT knows nothing of: the next prediction's
        # key would hand out that id again and its row would fail on the primary key. Every
        # such row moves the key's sequence past its id, as PostgreSQL's shared sequence does.
        database.execute_sql(
            "CREATE TRIGGER prediction_id_taken AFTER INSERT ON prediction "
            "WHEN NEW.id > COALESCE((SELECT seq FROM sqlite_sequence "
            "WHERE name = 'prediction_key'), 0) BEGIN "
            "UPDATE sqlite_sequence SET seq = NEW.id WHERE name = 'prediction_key'; "
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'prediction_key', NEW.id "
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'prediction_key'); "
            "END"
        )
        # Pruning picks rows by time.
        database.execute_sql("CREATE INDEX prediction_created_at ON prediction (created_at)")
        return
    columns = (
        "id, endpoint, model_version, observation_id, observation, proba, prediction, "
        "true_class, created_at, updated_at, probabilities, value, ab_test, arm"
    )
    old_sequence = database.execute_sql(
        "SELECT pg_get_serial_sequence('prediction', 'id')"
    ).fetchone()[0]
    last_id = database.execute_sql(f"SELECT last_value FROM {old_sequence}").fetchone()[0]
    database.execute_sql("ALTER TABLE prediction RENAME TO prediction_unpartitioned")
    database.execute_sql(
        "CREATE TABLE prediction (id BIGINT NOT NULL, endpoint VARCHAR(100) NOT NULL, "
        "model_version VARCHAR(100) NOT NULL, observation_id VARCHAR(255) NOT NULL, "
        "observation TEXT NOT NULL, proba DOUBLE PRECISION, prediction TEXT, true_class TEXT, "
        "created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP, probabilities TEXT, "
        "value DOUBLE PRECISION, ab_test BIGINT, arm VARCHAR(1)) PARTITION BY RANGE (created_at)"
    )
    database.execute_sql("CREATE TABLE prediction_default PARTITION OF prediction DEFAULT")
    # A partition for each month that holds rows (not every month between: none will come).
    months = database.execute_sql(
        "SELECT DISTINCT date_trunc('month', created_at) FROM prediction_unpartitioned"
    ).fetchall()
    for (start,) in sorted(months):
        end = dt.datetime(start.year + start.month // 12, start.month % 12 + 1, 1)
        database.execute_sql(
            f"CREATE TABLE prediction_{start.year:04d}_{start.month:02d} PARTITION OF "
            f"prediction FOR VALUES FROM ('{start:%Y-%m-%d}') TO ('{end:%Y-%m-%d}')"
        )
    database.execute_sql(
        f"INSERT INTO prediction ({columns}) SELECT {columns} FROM prediction_unpartitioned"
    )
    database.execute_sql(
        "CREATE TABLE prediction_key (id BIGSERIAL NOT NULL, endpoint VARCHAR(100) NOT NULL, "
        "observation_id VARCHAR(255) NOT NULL, created_at TIMESTAMP NOT NULL, "
        "PRIMARY KEY (endpoint, observation_id))"
    )
    database.execute_sql(
        "INSERT INTO prediction_key (id, endpoint, observation_id, created_at) "
        "SELECT id, endpoint, observation_id, created_at FROM prediction_unpartitioned"
    )
    # New ids continue after every id the old sequence handed out, stored or not.
    database.execute_sql(
        "SELECT setval(pg_get_serial_sequence('prediction_key', 'id'), "
        "GREATEST(%s, (SELECT COALESCE(MAX(id), 0) FROM prediction_key), 1))",
        (last_id,),
    )
    # A row written around the store (a backfill in SQL) still gets an id no key will reuse.
    database.execute_sql(
        "ALTER TABLE prediction ALTER COLUMN id SET DEFAULT "
        "nextval(pg_get_serial_sequence('prediction_key', 'id')::regclass)"
    )
    database.execute_sql("DROP TABLE prediction_unpartitioned")
    # Indexes after the rows: faster than keeping them up row by row.
    database.execute_sql("ALTER TABLE prediction ADD PRIMARY KEY (id, created_at)")
    database.execute_sql(
        "CREATE INDEX prediction_endpoint_model_version_created_at "
        "ON prediction (endpoint, model_version, created_at)"
    )
    database.execute_sql("CREATE INDEX prediction_ab_test_arm ON prediction (ab_test, arm)")


def _create_rollups(database: peewee.Database) -> None:
    """Hourly rollups of the prediction log (serving/reports/rollups.py), and the indexes that find
    an hour's rows and the rows whose ground truth changed."""

    class RollupState(peewee.Model):
        id = peewee.IntegerField(primary_key=True)
        sealed_hour = peewee.BigIntegerField(null=True)
        labels_from = peewee.DateTimeField(null=True)
        folded_at = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "rollup_state"

    class RollupCount(peewee.Model):
        id = peewee.BigAutoField()
        endpoint = peewee.CharField(max_length=100)
        model_version = peewee.CharField(max_length=100)
        hour = peewee.BigIntegerField()
        predictions = peewee.BigIntegerField()
        labelled = peewee.BigIntegerField()

        class Meta:
            table_name = "rollup_count"
            indexes = ((("endpoint", "model_version", "hour"), True), (("hour",), False))

    class RollupBinary(peewee.Model):
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

    class RollupBinaryDaily(peewee.Model):
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

    class RollupRegression(peewee.Model):
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

    tables = [RollupState, RollupCount, RollupBinary, RollupBinaryDaily, RollupRegression]
    with database.bind_ctx(tables):
        database.create_tables(tables, safe=False)
    # The rollup job reads the log an hour at a time, and finds the hours whose ground truth
    # changed since it last ran; few rows have updated_at, so that index holds only those.
    # Migration 7 made the first on SQLite already (pruning picks rows by time).
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS prediction_created_at ON prediction (created_at)"
    )
    database.execute_sql(
        "CREATE INDEX prediction_updated_at ON prediction (updated_at) WHERE updated_at IS NOT NULL"
    )


Migration = tuple[int, str, Callable[[peewee.Database], None]]

MIGRATIONS: list[Migration] = [
    (1, "create prediction", _create_prediction_table),
    (2, "prediction: probabilities and regression value", _add_prediction_outputs),
    (3, "create version_status", _create_version_status_table),
    (4, "A/B tests, shadow versions and scores", _add_experiments),
    (5, "create api_key", _create_api_keys),
    (6, "create published_version and published_file", _create_published_versions),
    (7, "prediction: ids in prediction_key, partitioned by month", _partition_predictions),
    (8, "hourly rollups of the prediction log", _create_rollups),
]


def current_version(database: peewee.Database | None = None) -> int:
    """The schema version the database is at; 0 for an empty database."""
    database = database or db.obj
    if not database.table_exists("schema_version"):
        return 0
    with database.bind_ctx([SchemaVersion]):
        latest = SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar()
    return latest or 0


def migrate(database: peewee.Database | None = None, target: int | None = None) -> list[int]:
    """Apply pending migrations in order (up to `target`, default all) inside one locked
    transaction; return those applied."""
    database = database or db.obj
    applied: list[int] = []
    lock = "IMMEDIATE" if is_sqlite(database) else None
    with database.bind_ctx([SchemaVersion]), database.atomic(*([lock] if lock else [])):
        if not is_sqlite(database):
            # A migration (an index on a large table) and the wait for another worker's may
            # take far longer than a request's statement_timeout: none for this transaction.
            database.execute_sql("SET LOCAL statement_timeout = 0")
            # Several workers or replicas may start at once; the first migrates, the rest
            # wait here and then find nothing left to do.
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        database.create_tables([SchemaVersion], safe=True)
        done = current_version(database)
        for version, name, step in MIGRATIONS:
            if version <= done or (target is not None and version > target):
                continue
            logger.info("applying migration %s: %s", version, name)
            step(database)
            SchemaVersion.create(version=version, name=name)
            applied.append(version)
        partitions.ensure(database, utcnow())
    return applied


def ensure_partitions(database: peewee.Database | None = None) -> list[str]:
    """Make the prediction partitions due now and ahead (PostgreSQL), under the migration
    lock; for a start with MIGRATE_ON_START off and for `flask prune-predictions`."""
    database = database or db.obj
    if is_sqlite(database):
        return []
    with database.atomic():
        database.execute_sql("SET LOCAL statement_timeout = 0")
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        return partitions.ensure(database, utcnow())
