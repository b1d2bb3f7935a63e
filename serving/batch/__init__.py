"""Batch scoring: many rows at once, over HTTP (`/api/v1/<endpoint>/predict/batch`) or from a
CSV file with `flask score`, every scored row stored as an ordinary prediction.

rows.py reads the input (JSON array or CSV) and its ids, cells.py reads CSV cells as JSON
values, core.py routes, checks, scores and answers rows, render.py writes the answers as JSON
or CSV, files.py streams a large file with resumable progress, command.py is `flask score`;
partitions.py and cluster.py are its `--engine dask` (a file's partitions on Dask workers).
"""

# The column of a CSV batch that holds each row's id (echoed in its answer); here, not in
# rows.py, so that `flask score`'s options are defined without importing pandas.
ID_COLUMN = "id"
