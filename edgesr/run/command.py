"""CLI verb ``edgesr run RECIPE.yaml --out DIR [--data DIR ...] [--set key=value ...]``.

Only argparse at module level: the pipeline (torch, runtimes) is imported by the handler.
"""

from __future__ import annotations

import argparse
import shlex


def _command_line(args: argparse.Namespace) -> str:
    """The run as a user would retype it (rebuilt from the parsed options)."""
    parts = ["edgesr", "run", args.recipe, "--out", args.out]
    if args.data:
        parts += ["--data", *args.data]
    for item in args.set:
        parts += ["--set", item]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run
    from .recipe import load_run_recipe

    recipe = load_run_recipe(args.recipe, args.set, args.data)
    run(recipe, args.out, command=_command_line(args), progress=not args.quiet, verbose=args.verbose)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a recipe end to end: teacher, distill, reparam, quantize, export, check, report",
        description="Run the stages a recipe names (see recipes/): teacher (zoo/official weights or trained), "
                    "distilled student, reparameterization, int8 quantization per target (PTQ or QAT), export per "
                    "target and precision, a check of every artifact in its runtime, and a report (report.md, "
                    "report.html, report.json in OUT/report). Each stage is cached under OUT/stages by a hash of "
                    "its inputs: re-running after a crash, Ctrl-C or an edit resumes where it stopped. Library "
                    "output goes to OUT/logs.")
    p.add_argument("recipe", help="run recipe (YAML), e.g. recipes/quickstart.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (stages/, logs/, report/)")
    p.add_argument("--data", nargs="+", metavar="DIR",
                   help="evaluation folders (as `edgesr eval --data`) in place of the recipe's data.eval; default: "
                        "the scikit-image sample photos")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a recipe key, e.g. --set check.runs=5 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--verbose", action="store_true", help="show the libraries' output instead of logging it")
    p.set_defaults(func=cmd_run)
