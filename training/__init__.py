"""Deterministic training of the bundled models: `python -m training <model> --out DIR`."""
