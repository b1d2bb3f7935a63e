"""The naive baseline: a tutorial-style Flask app, served by the harness with plain gunicorn.

Deliberately simple, as a first deployment usually is: per request it builds a one-row
DataFrame, casts it to the training dtypes, calls predict_proba, inserts one row with one
commit, and answers {"proba": ...}. Reads MODEL_DIR (the model folder) and DATABASE_URL.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import joblib
import pandas as pd
from flask import Flask, jsonify, request
from peewee import BigIntegerField, FloatField, IntegrityError, Model, TextField
from playhouse.db_url import connect

MODEL_DIR = Path(os.environ.get("MODEL_DIR", "."))
DB = connect(os.environ.get("DATABASE_URL") or "sqlite:///baseline.db")


class BaselinePrediction(Model):
    """One stored prediction, keyed by the caller's id."""

    observation_id = BigIntegerField(unique=True)
    observation = TextField()
    proba = FloatField()
    true_class = BigIntegerField(null=True)

    class Meta:
        database = DB
        table_name = "baseline_prediction"


# Startup: the table, then the model files.
DB.create_tables([BaselinePrediction], safe=True)
# Forked workers must each open their own connection, not share this one's socket.
DB.close()

with open(MODEL_DIR / "columns.json") as handle:
    COLUMNS = json.load(handle)
with open(MODEL_DIR / "dtypes.pickle", "rb") as handle:
    DTYPES = pickle.load(handle)
PIPELINE = joblib.load(MODEL_DIR / "pipeline.pickle")

app = Flask(__name__)


@app.get("/")
def index():
    """A simple route to tell that the server is up."""
    return jsonify({"status": "ok"})


@app.post("/predict")
def predict():
    """Score one observation and store it."""
    payload = request.get_json()
    observation_id = payload["id"]
    observation = payload["observation"]
    frame = pd.DataFrame([observation], columns=COLUMNS).astype(DTYPES)
    proba = float(PIPELINE.predict_proba(frame)[0, 1])
    try:
        # peewee autocommits outside a transaction: one INSERT, one COMMIT.
        BaselinePrediction.create(
            observation_id=observation_id, observation=json.dumps(observation), proba=proba
        )
    except IntegrityError:
        DB.rollback()
        return jsonify({"error": f"observation id {observation_id} already exists"}), 409
    return jsonify({"proba": proba})
