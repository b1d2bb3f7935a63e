"""On-demand benchmark of the service against a naive tutorial baseline: `python -m bench`.

Not part of the test suite; see bench/README.md for what it measures and the targets.
"""
