"""The ``edgesr`` command. Heavy libraries are imported inside each verb so ``--help`` stays instant.

Every user mistake ends as one line on stderr and exit code 2; nothing prints a traceback unless
``EDGESR_DEBUG=1`` is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

from .cliargs import add_model_args, check_output_path, model_spec, nonneg_int, positive_int, usage_error, write_json
from .errors import one_line

EXIT_USAGE = 2
EXIT_INTERNAL = 1


# --------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .data.folders import open_benchmark
    from .data.samples import sample_benchmark
    from .evaluate import evaluate
    from .metrics import paired_drop_se
    from .models import describe
    from .quantize.checkpoint import load_model

    check_output_path(args.json)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = model_spec(args)
    model = load_model(spec).to(args.device)
    args.scale = spec.scale
    benchmarks = ([open_benchmark(d, args.scale, args.modcrop, convention=args.lr_convention) for d in args.data]
                  if args.data else [sample_benchmark(args.scale, convention=args.lr_convention)])
    names = [b.name for b in benchmarks]
    if len(set(names)) != len(names):
        raise usage_error(f"two data folders share a name ({', '.join(names)}); results are keyed by folder name")
    results = [evaluate(model, b, args.scale, tile=args.tile, overlap=args.overlap, device=args.device,
                        progress=not args.quiet) for b in benchmarks]
    weights = args.weights or "random init"
    refs: list[Any] = []
    if getattr(model, "quantized", False):  # say which numbers are int8: fp32 and int8 come from the same verb
        weights += f" [int8 fake-quant, {model.target} {model.mode}]"
        from .quantize.checkpoint import fp32_of  # and its drop: fp32 on the input the int8 graph sees

        fp32 = model.same_input(fp32_of(model)).to(args.device)
        refs = [evaluate(fp32, b, args.scale, tile=args.tile, overlap=args.overlap, device=args.device,
                         progress=not args.quiet) for b in benchmarks]
    ses = [paired_drop_se([f.per_image[n]["psnr_y"] for n in r.per_image],
                          [v["psnr_y"] for v in r.per_image.values()]) for f, r in zip(refs, results)]
    print(f"{describe(spec)}  weights: {weights}  (Y channel, border {args.scale}, "
          f"LR: {args.lr_convention} bicubic"
          + (f", tiles {args.tile}/{args.overlap}" if args.tile else "") + ")")
    extra = f" {'fp32 same input':>16} {'int8 drop':>9} {'± se':>7}" if refs else ""
    print(f"{'dataset':<20} {'PSNR-Y':>8} {'SSIM-Y':>8} {'images':>7} {'seconds':>8}" + extra)
    for i, r in enumerate(results):
        se = "" if not refs or ses[i] is None else f" {ses[i]:7.3f}"
        more = f" {refs[i].psnr_y:16.3f} {refs[i].psnr_y - r.psnr_y:+9.3f}{se}" if refs else ""
        print(f"{r.name:<20} {r.psnr_y:8.3f} {r.ssim_y:8.4f} {r.images:7d} {r.seconds:8.1f}" + more)
    if refs:
        print("fp32 same input: the fp32 weights inside the int8 checkpoint, on images edge-padded as the int8 "
              "graph pads them; int8 drop = that minus int8 (positive = worse), ± its standard error over the "
              "images")
    if args.json:
        out = {r.name: r.to_json() for r in results}
        for r, ref, se in zip(results, refs, ses):
            out[r.name].update(fp32_same_input_psnr_y=ref.psnr_y, drop_db=ref.psnr_y - r.psnr_y, drop_se_db=se)
        write_json(args.json, out)
    return 0


# -------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from .train import load_train_recipe, train

    recipe = load_train_recipe(args.recipe, args.set)
    if args.iterations is not None:
        recipe.iterations = args.iterations
    final = train(recipe, args.out, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {recipe.model.name} x{recipe.model.scale}: {final}")
    return 0


# ------------------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from .models import SCALES, factory, names, num_params
    from .zoo import available

    zoo = set(available())
    print(f"{'name':<14}" + "".join(f"{'x' + str(s):>12}" for s in SCALES) + "  zoo weights")
    for name in names():
        scales = getattr(factory(name), "scales", SCALES)
        cells = []
        for s in SCALES:
            if s not in scales:
                cells.append(f"{'-':>12}")
                continue
            with torch.device("meta"):  # counts only: no weights allocated or initialised
                cells.append(f"{num_params(factory(name)(scale=s)):>12,}")
        print(f"{name:<14}" + "".join(cells) + "  " + (" ".join(f"x{s}" for n, s in sorted(zoo) if n == name) or "-"))
    return 0


# ------------------------------------------------------------------------------------ helpers
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the promise for every bad input), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgesr",
        description="Lightweight super-resolution, from research code to phones.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("eval", help="PSNR/SSIM-Y of a model on benchmark folders, as papers report it",
                       description="Evaluate a model exactly as SR papers do: MATLAB-bicubic LR, uint8 output, "
                                   "Y channel, border crop = scale. Without --data, runs on sample photos "
                                   "shipped with scikit-image.")
    add_model_args(p)
    p.add_argument("--data", nargs="+", metavar="DIR",
                   help="benchmark folders: HR images, or HR/ + LR/ (BasicSR layout); name = folder name")
    p.add_argument("--lr-convention", choices=("matlab", "basicsr"), default="matlab",
                   help="how LR is made from HR folders: 'matlab' = HR mod-cropped to the scale, MATLAB "
                        "imresize of the uint8 image (SelfExSR/EDSR LR; default); 'basicsr' = HR mod-cropped "
                        "to 12, imresize of the double image (BasicSR's benchmark pack, as EIMN/SAFMN report)")
    p.add_argument("--modcrop", type=positive_int, default=None, metavar="M",
                   help="override the convention's HR mod-crop multiple")
    p.add_argument("--json", metavar="OUT", help="write {dataset: {psnr_y, ssim_y, images, ...}} here")
    p.add_argument("--tile", type=positive_int, default=None,
                   help="LR tile size for images too large for memory (changes results of models "
                        "with whole-image operations; see docs/evaluation.md#tiling)")
    p.add_argument("--overlap", type=nonneg_int, default=24,
                   help="LR pixels of context around each tile (default 24; exact for SCNet from 20)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1 ...)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a teacher or distill a student from a recipe",
                       description="Train from a YAML recipe (see recipes/). CPU, CUDA, or several processes "
                                   "with `torchrun --nproc_per_node N -m edgesr train ...` (DDP). Checkpoints are "
                                   "written atomically; Ctrl-C saves; --resume continues bit-identically on CPU.")
    p.add_argument("recipe", help="training recipe (YAML)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, train_log.jsonl, model.pt)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a recipe key, e.g. --set optim.lr=2e-4 (repeatable)")
    p.add_argument("--iterations", type=positive_int, default=None, help="shortcut for --set iterations=N")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    for register in _plugin_commands():
        register(sub)

    p = sub.add_parser("models", help="list registered models with parameter counts",
                       description="List every registered model name with its parameter count per scale "
                                   "and which scales the built-in zoo has weights for.")
    p.set_defaults(func=cmd_models)
    return parser


def _plugin_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Verbs that live next to their stage (``edgesr/<stage>/command.py``, each with ``register(sub)``).

    Those modules import only argparse-level things at the top, so ``edgesr --help`` stays instant.
    """
    import importlib

    registers = []
    for module in PLUGIN_MODULES:
        try:
            registers.append(importlib.import_module(module).register)
        except ModuleNotFoundError as exc:
            if not exc.name or not module.startswith(exc.name):  # a real import error inside the stage
                raise
    return registers


PLUGIN_MODULES = (
    "edgesr.reparam.command", "edgesr.export.command", "edgesr.quantize.command", "edgesr.run.command",
)


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "latency_factory"):  # quantize --auto times its finalists with the export stage (a layer up)
        from .export.latency import LatencyProbe

        args.latency_factory = LatencyProbe
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import EdgesrError

    debug = os.environ.get("EDGESR_DEBUG") == "1"
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("edgesr: interrupted", file=sys.stderr)
        return 130
    except (EdgesrError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if debug:
            raise
        code = getattr(exc, "exit_code", EXIT_USAGE)
        print(f"edgesr: {'error: ' if code == EXIT_USAGE else ''}{one_line(exc)}", file=sys.stderr)
        return code
    except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback for the user
        if debug:
            raise
        print(f"edgesr: internal error: {type(exc).__name__}: {one_line(exc)} "
              "(set EDGESR_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL




if __name__ == "__main__":
    sys.exit(main())
