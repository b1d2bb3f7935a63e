"""Copy a model folder as a version ready to publish: the pipeline saved with skops instead of
pickle, model.json trusting the types it holds and pinning every file's sha256.

    .venv/bin/python examples/as_skops.py SOURCE DEST --endpoint NAME --version V

SOURCE is a folder you trust (its pipeline.pickle is unpickled here, on your machine); review
the `skops_trusted` list it prints before you publish DEST.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import joblib
import skops.io

FILES = ("pipeline.skops", "dtypes.pickle", "columns.json")
# A pickle's custom transformers come from the repository's custom_transformers package.
sys.path.insert(0, str(Path(__file__).absolute().parent.parent))


def main() -> None:
    """Write DEST from SOURCE as the module's docstring says."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--version", required=True)
    args = parser.parse_args()

    args.dest.mkdir(parents=True, exist_ok=False)
    pipeline = joblib.load(args.source / "pipeline.pickle")
    skops.io.dump(pipeline, args.dest / "pipeline.skops")
    for name in ("dtypes.pickle", "columns.json"):
        shutil.copyfile(args.source / name, args.dest / name)
    metadata = json.loads((args.source / "model.json").read_text(encoding="utf-8"))
    # The pickle's pins no longer apply; every file of the new folder is pinned instead.
    metadata.pop("pipeline_sha256", None)
    trusted = skops.io.get_untrusted_types(file=args.dest / "pipeline.skops")
    metadata.update(
        endpoint=args.endpoint,
        version=args.version,
        skops_trusted=trusted,
        sha256={
            name: hashlib.sha256((args.dest / name).read_bytes()).hexdigest() for name in FILES
        },
    )
    (args.dest / "model.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.dest}; skops_trusted: {', '.join(trusted)}")


if __name__ == "__main__":
    main()
