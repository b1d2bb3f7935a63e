"""The prediction store: batches, replays and conflicts inside one transaction."""

from __future__ import annotations

from serving.errors import Conflict
from serving.store import predictions
from serving.store.predictions import NewPrediction
from serving.store.tables import Prediction


def new(observation_id, x: float = 1.0) -> NewPrediction:
    return NewPrediction("default", "1", observation_id, {"x": x}, 0.25, 0)


def test_a_batch_larger_than_one_statement_is_stored_whole(app):
    with app.app_context():
        outcomes = predictions.store([new(i) for i in range(1_200)])
        assert all(isinstance(o, Prediction) for o in outcomes)
        assert len({o.id for o in outcomes}) == 1_200
        assert Prediction.select().count() == 1_200


def test_duplicates_inside_one_batch_replay_or_conflict(app):
    with app.app_context():
        outcomes = predictions.store([new("a"), new("a"), new("a", x=2.0), new("b")])
        first, replay, conflict, other = outcomes
        assert isinstance(first, Prediction) and isinstance(replay, Prediction)
        assert replay.id == first.id
        assert isinstance(conflict, Conflict)
        assert isinstance(other, Prediction) and other.id != first.id
        assert Prediction.select().count() == 2


def test_ids_stored_earlier_replay_or_conflict(app):
    with app.app_context():
        [earlier] = predictions.store([new(7)])
        again, changed, fresh = predictions.store([new("7"), new(7, x=3.0), new(8)])
        assert again.id == earlier.id
        assert isinstance(changed, Conflict)
        assert isinstance(fresh, Prediction)
        assert Prediction.select().count() == 2
