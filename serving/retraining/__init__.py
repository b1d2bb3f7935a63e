"""Retraining from the ground truth the service collected: the labelled logged rows of an
endpoint refit a clone of its production pipeline, a gate compares the candidate with
production on the newest rows (held out), and a candidate that is not significantly worse is
registered as the endpoint's next version, then shadowed or A/B tested.

- `rows`: the labelled rows of a window, in time order, their digest and the holdout split;
- `gate`: candidate against production on exactly the holdout rows;
- `candidate`: the one seam that packages and publishes a candidate, and the version it gets;
- `job`: the whole job, as `flask retrain` and `POST /api/v1/<endpoint>/retrain` run it;
- `command`: `flask retrain`.
"""
