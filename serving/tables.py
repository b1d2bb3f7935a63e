"""The peewee tables the service writes; their shape is built by `serving.migrations`."""

from __future__ import annotations

import datetime as dt

import peewee

from serving.database import db


def utcnow() -> dt.datetime:
    """Naive UTC, the one timezone every stored timestamp is in."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseTable(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


class Prediction(BaseTable):
    """One scored observation. Labels and observations are stored as JSON text, portable to
    SQLite and PostgreSQL alike and compared as canonical strings."""

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

    class Meta:
        table_name = "prediction"
        indexes = ((("endpoint", "observation_id"), True),)


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
