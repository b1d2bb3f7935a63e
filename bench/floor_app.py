"""The floor: Flask under the service's own gunicorn settings, answering POST /predict with a
constant JSON after parsing the body. No model, no database, no validation: what any Flask
service on this stack pays per request before doing anything, so `ours / floor` says how
close the service runs to its framework. Its answers are not checked (they are constant)."""

from __future__ import annotations

import json

from flask import Flask, jsonify, request

app = Flask(__name__)
ANSWER = {"proba": 0.5, "prediction": 0}


@app.post("/predict")
def predict():
    """Parse the body as the service does, then answer the same constant every time."""
    json.loads(request.get_data())
    return jsonify(ANSWER)


@app.get("/health")
def health():
    """Alive: the harness waits for this before it sends load."""
    return {"status": "ok"}
