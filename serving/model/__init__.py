"""A model: its folder's files, checks and pins, loading, the registry of what this
process serves, scoring, packaging and publishing."""
