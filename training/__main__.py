"""Command line: `python -m training titanic [--out DIR]`."""

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from training import data, titanic

logger = logging.getLogger("training")

# Each subcommand names a model and the function that trains it into a folder.
TRAINERS: dict[str, Callable[[Path], dict]] = {"titanic": titanic.train}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the model name and output folder from the command line."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    models = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name in TRAINERS:
        command = models.add_parser(name, help=f"train the bundled {name} model")
        command.add_argument(
            "--out",
            type=Path,
            default=data.REPO_ROOT,
            help="folder to write the model files into (default: the repository root)",
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Train the chosen model and log where its files went and how it scored."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    args = parse_args(argv)
    model = TRAINERS[args.model](args.out)
    logger.info("wrote %s model to %s", args.model, args.out.resolve())
    logger.info("holdout metrics %s", model["metrics"]["holdout"])


if __name__ == "__main__":
    main()
