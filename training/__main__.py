"""Command line: `python -m training {titanic,income,heights,all} [--out DIR]`.

`titanic` writes the default endpoint's four files into --out (default: the repository
root); `income` and `heights` write `<endpoint>/<version>/` folders under --out (default:
the repository's models/). `all` trains all three into a repository-shaped tree rooted at
--out (default: the repository root), so `all --out /tmp/x` gives /tmp/x/pipeline.pickle
and /tmp/x/models/....
"""

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from training import data, heights, income, titanic

logger = logging.getLogger("training")


def _titanic(out: Path) -> list[dict]:
    return [titanic.train(out)]


def _income(out: Path) -> list[dict]:
    return list(income.train(out).values())


def _heights(out: Path) -> list[dict]:
    return [heights.train(out)]


# name -> (trainer returning every model.json it wrote, its output folder relative to a
# repository root). The default endpoint lives at the root itself, the others in models/.
TRAINERS: dict[str, tuple[Callable[[Path], list[dict]], Path]] = {
    "titanic": (_titanic, Path()),
    "income": (_income, Path("models")),
    "heights": (_heights, Path("models")),
}
ALL = "all"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the model name (or `all`) and the output folder from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, (_, relative) in TRAINERS.items():
        command = models.add_parser(name, help=f"train the bundled {name} model")
        command.add_argument(
            "--out",
            type=Path,
            default=data.REPO_ROOT / relative,
            help=f"folder to write into (default: <repository>/{relative.as_posix()})",
        )
    everything = models.add_parser(ALL, help="train every bundled model")
    everything.add_argument(
        "--out",
        type=Path,
        default=data.REPO_ROOT,
        help="root of the tree to write into (default: the repository root)",
    )
    return parser.parse_args(argv)


def destinations(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """Return (model name, output folder) for every model the command trains."""
    if args.model == ALL:
        return [(name, args.out / relative) for name, (_, relative) in TRAINERS.items()]
    return [(args.model, args.out)]


def main(argv: list[str] | None = None) -> None:
    """Train the chosen models and log where their files went and how they scored."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    for name, out in destinations(parse_args(argv)):
        train, _ = TRAINERS[name]
        for model in train(out):
            logger.info("wrote %s %s into %s", name, model["version"], out.resolve())
            logger.info("metrics %s", model["metrics"])


if __name__ == "__main__":
    main()
