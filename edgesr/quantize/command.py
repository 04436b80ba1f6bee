"""``edgesr quantize``: PTQ or QAT int8 for one target, saved as a checkpoint that `eval` and `export` load."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

from ..cliargs import add_model_args, check_output_path, model_spec, nonneg_int, positive_int, spec_flags
from ..errors import UsageError
from .config import OBSERVERS, TARGETS


def cmd_quantize(args: argparse.Namespace) -> int:
    import torch

    from ..data.samples import CALIB_IMAGES, sample_paths
    from ..io_utils import atomic_write_text
    from ..models import ModelSpec
    from . import QuantConfig, ptq, qat, save_quantized

    check_output_path(args.out)
    check_output_path(args.analyze_json)
    if args.mode == "qat" and not args.data:
        raise UsageError("--mode qat needs --data FOLDER ... (HR training images)")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = QuantConfig(observer=args.observer, keep_float=list(args.keep_float), clamp_output=not args.no_clamp,
                      float_adds=args.float_adds, island_exits=not args.no_island_exits, outlier_ratio=args.outlier_ratio,
                      migrate=args.migrate,
                      float_muls=args.float_muls, equalize=args.equalize, scale_search=args.scale_search, bias_correction=args.bias_correction,
                      calib_size=args.calib_size, calib_patch=args.calib_patch,
                      iterations=args.iterations, lr=args.lr, batch_size=args.batch_size,
                      patch_size=args.patch_size, kd_weight=args.kd_weight, seed=args.seed)
    cfg.validate()
    from ..reparam import load as load_float

    spec = model_spec(args)
    model = load_float(spec)
    args.model, args.scale = spec.model, spec.scale
    calib = [str(d) for d in args.data] if args.data else [str(p) for p in sample_paths(CALIB_IMAGES)]
    t0 = time.perf_counter()
    if args.auto or args.analyze:  # calibration and validation images: never the same ones
        from .auto import split_images

        if args.val:
            val = [str(v) for v in args.val]
        else:
            cal_paths, val_paths = split_images(calib, every=5 if args.data else 3)
            calib, val = [str(p) for p in cal_paths], [str(p) for p in val_paths]
    if args.analyze:
        from ..models import size_multiple
        from .auto import layer_drops, validation_pairs
        from .ptq import calibration_inputs

        inputs = calibration_inputs(calib, spec.scale, cfg, size_multiple(model))
        pairs = validation_pairs(val, spec.scale, 8, 64, size_multiple(model))
        rows = layer_drops(model, args.target, inputs, pairs, cfg, progress=not args.quiet)
        print(f"{'layer':<40} {'PSNR-Y drop vs HR, only this layer int8 (dB)':>46}")
        for r in rows:
            print(f"{r['layer'] or '(top)':<40} {r['drop_db']:46.4f}")
        if args.analyze_json:
            atomic_write_text(args.analyze_json, json.dumps(rows, indent=2) + "\n")
        if not args.out:
            return 0
    if not args.out:
        raise UsageError("--out CKPT is required (or use --analyze alone)")
    teacher = None
    if args.teacher:
        t_name, _, t_weights = args.teacher.partition(":")
        teacher = load_float(ModelSpec(t_name, args.scale, weights=t_weights or "zoo"))
    if args.auto:
        from .auto import auto_quantize, recipe_yaml

        latency = None
        if args.finalists and args.latency_factory is not None:  # the export stage's stopwatch (wired by the CLI)
            latency = args.latency_factory(model, args.target, args.latency_size, threads=args.threads)
        res = auto_quantize(model, args.target, calib, val, args.budget_db, config=cfg, max_trials=args.max_trials,
                            time_limit=args.time_limit, cache_dir=args.trials_dir or f"{args.out}.search",
                            qat_images=calib if args.mode == "qat" else None, latency=latency,
                            finalists=args.finalists, val_count=args.val_count, progress=not args.quiet)
        q = res.model
        print(f"int8 search for {args.target}: {len(res.trials)} trials "
              f"({sum(t.cached for t in res.trials)} from the cache), log: {args.trials_dir or args.out + '.search'}"
              "/trials.jsonl")
        print(f"{'trial':<48} {'drop dB':>8} {'int8 MACs':>9} {'int8/fp32 ms':>16}")
        for t in res.trials:
            ms = (f"{t.latency['int8_ms']:.1f}/{t.latency['fp32_ms']:.1f}" if t.latency and "int8_ms" in t.latency
                  else "export failed" if t.latency and t.latency.get("export_error") else "")
            print(f"{t.name[:48]:<48} {t.drop_db:8.4f} {t.int8_mac_share:9.1%} {ms:>16}"
                  + ("  *" if t is res.chosen else ""))
        c = res.chosen
        verdict = "within" if res.within_budget else "OVER"
        speed = (f", {c.latency['speedup']:.2f}x fp32 in {c.latency['runtime']} at "
                 f"{c.latency['input_size'][0]}x{c.latency['input_size'][1]}" if c.latency and "speedup" in c.latency
                 else "")
        se = f" ± {c.drop_se_db:.4f}" if c.drop_se_db else ""
        print(f"chosen: {c.name}: validation drop {c.drop_db:.4f}{se} dB ({verdict} the {args.budget_db:g} dB "
              f"budget, {res.validation_images} held-out images), {c.int8_mac_share:.0%} of MACs int8{speed}")
        if not res.within_budget:
            print(f"warning: over budget: no configuration reached {args.budget_db:g} dB", file=sys.stderr)
        print("recipe that reproduces it without the search:\n" + recipe_yaml(args.target, res))
    elif args.mode == "ptq":
        q = ptq(model, args.target, calib, cfg, progress=not args.quiet)
    else:
        q = qat(model, args.target, calib, cfg, teacher=teacher, progress=not args.quiet)
    save_quantized(q, args.out, extra={"command": _command_line(args)})
    if not cfg.outlier_ratio and args.mode == "ptq" and not args.auto:
        _hint_outliers(model, calib, cfg)
    if cfg.migrate:
        n = q.info.get("migrated_groups", 0)
        print(f"outlier migration (strength {cfg.migrate:g}): {n} imbalanced activation group{'' if n == 1 else 's'} "
              "evened out")
    if cfg.outlier_ratio:
        found = q.info.get("outliers", [])
        print(f"outlier guard (ratio > {cfg.outlier_ratio:g}): {len(found)} activations, "
              f"{q.info.get('kept_float_nodes', 0)} ops kept float"
              + (f"; worst {found[0]['module'] or '(top)'} x{found[0]['ratio']:.0f}" if found else ""))
    print(f"wrote {args.out}: {args.model} x{args.scale} int8 for {args.target} ({args.mode}, "
          f"{time.perf_counter() - t0:.0f} s)")
    flags = " ".join(shlex.quote(f) for f in spec_flags(spec))
    eval_flags = " ".join(shlex.quote(f) for f in spec_flags(spec.replace(weights=args.out)))
    print(f"  evaluate: edgesr eval {eval_flags}")
    print(f"  export:   edgesr export {flags} --quantized {args.out} "
          f"--target {args.target} --precision int8 --input-size 180x320 --out MODEL.{_suffix(args.target)}")
    return 0


def _hint_outliers(model, calib: list[str], cfg) -> None:
    """Without the guard, say when the calibration data shows channels a per-tensor scale cannot hold
    (EIMN-A x4 loses 6 dB to them), so the user knows which flag fixes it."""
    from ..models import size_multiple
    from .graph import capture
    from .outliers import find_outliers
    from .ptq import calibration_inputs, model_scale

    inputs = calibration_inputs(calib, model_scale(model), cfg, size_multiple(model))
    found = find_outliers(capture(model, clamp_output=cfg.clamp_output), inputs, 32.0)
    if found:
        worst = found[0]
        print(f"hint: {len(found)} activations have channel ranges > 32x apart (worst: "
              f"{worst.module or '(top)'} x{worst.ratio:.0f}); int8 may lose a lot: "
              "try --outlier-ratio 8 --migrate 0.5")


def _suffix(target: str) -> str:
    from ..targets import suffix

    return suffix(target).lstrip(".")


def _command_line(args: argparse.Namespace) -> str:
    import shlex
    import sys

    return " ".join(shlex.quote(a) for a in ["edgesr", *sys.argv[1:]])


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if not (h.isdigit() and (w.isdigit() or not sep)) or int(h) < 1 or (sep and int(w) < 1):
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 96x96, got {text!r}")
    return int(h), int(w or h)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="int8 PTQ or QAT for a target runtime (ExecuTorch, TFLite, Core ML)",
        description="Quantize a model to int8 with the target runtime's own scheme (PT2E): post-training "
                    "calibration (ptq) or quantization-aware training with distillation from full precision (qat). "
                    "The checkpoint reloads to the same fake-quant model: `edgesr eval --weights CKPT` evaluates "
                    "it in PyTorch, `edgesr export --quantized CKPT --precision int8` lowers it.")
    add_model_args(p, "fp32 weights file (raw state_dict, BasicSR or edgesr checkpoint) or 'zoo'")
    p.add_argument("--target", required=True, choices=TARGETS, help="the runtime whose int8 scheme to use")
    p.add_argument("--mode", choices=("ptq", "qat"), default="ptq", help="post-training or quantization-aware")
    p.add_argument("--data", nargs="+", default=None, metavar="DIR",
                   help="HR image folders: calibration (ptq) or training (qat) images; default (ptq only): "
                        "scikit-image's bundled photos")
    p.add_argument("--out", default=None, metavar="CKPT", help="quantized checkpoint to write (atomically)")
    p.add_argument("--calib-size", type=positive_int, default=16, help="calibration images (default 16)")
    p.add_argument("--calib-patch", type=positive_int, default=96, help="LR centre crop for calibration")
    p.add_argument("--observer", choices=OBSERVERS, default="histogram", help="activation range observer (ptq)")
    p.add_argument("--keep-float", nargs="*", default=[], metavar="LAYER",
                   help="layers left in float: 'first', 'last' or module paths (see --analyze)")
    p.add_argument("--no-clamp", action="store_true", help="do not clamp the output to [0, 1] in the graph")
    p.add_argument("--float-adds", action="store_true", help="leave residual adds unquantized")
    p.add_argument("--float-muls", action="store_true",
                   help="leave elementwise products of two activations unquantized (attention / modulation)")
    p.add_argument("--no-island-exits", action="store_true",
                   help="tflite: quantize a float value per int8 consumer instead of once where it leaves the float "
                        "region (as XNNPACK; the converter then merges the ranges: check the .tflite with `edgesr check`)")
    p.add_argument("--outlier-ratio", type=float, default=0.0, metavar="R",
                   help="keep float every activation whose largest channel range is > R x the median "
                        "channel's on the calibration data (0: off; 16 for EIMN)")
    p.add_argument("--migrate", type=float, default=0.0, metavar="A",
                   help="outlier migration strength in (0, 1]: residual streams with imbalanced channels are evened "
                        "out per channel into the convs that read them (same fp32 function; 0: off; 0.5 typical)")
    p.add_argument("--equalize", action="store_true",
                   help="cross-layer equalization of conv -> ReLU/LeakyReLU/PReLU -> conv pairs (same fp32 function)")
    p.add_argument("--scale-search", action="store_true",
                   help="per-channel int8 weight scales that minimise each conv's output MSE on the calibration data")
    p.add_argument("--bias-correction", action="store_true",
                   help="subtract the per-channel output mean shift the int8 weights cause on the calibration data")
    p.add_argument("--iterations", type=positive_int, default=300, help="QAT steps (default 300)")
    p.add_argument("--lr", type=_positive_float, default=2e-5, help="QAT learning rate (Adam, cosine)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="QAT batch")
    p.add_argument("--patch-size", type=positive_int, default=96, help="QAT HR patch side")
    p.add_argument("--kd-weight", type=float, default=1.0, help="QAT: L1 to the full-precision SR (0: off)")
    p.add_argument("--teacher", default=None, metavar="NAME[:WEIGHTS]",  # a registry name (weights default: zoo)
                   help="QAT distillation teacher (default: the fp32 model itself), e.g. eimn_a:zoo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--auto", action="store_true",
                   help="search the int8 configuration within --budget-db on validation images (with --mode qat: "
                        "QAT is the last step when PTQ cannot reach it)")
    p.add_argument("--budget-db", type=_positive_float, default=0.05, metavar="B",
                   help="--auto: largest PSNR-Y drop vs fp32 (dB) allowed on the validation images (default 0.05)")
    p.add_argument("--val", nargs="+", default=None, metavar="DIR",
                   help="validation images for --auto / --analyze (default: every 5th image of --data, held out)")
    p.add_argument("--val-count", type=positive_int, default=32, metavar="N",
                   help="--auto: validation images the budget is checked on (whole, or centre 128 px LR crops "
                        "of larger ones; default 32)")
    p.add_argument("--max-trials", type=positive_int, default=24, help="--auto: most configurations to try")
    p.add_argument("--time-limit", type=_positive_float, default=None, metavar="S",
                   help="--auto: stop starting new trials after S seconds")
    p.add_argument("--trials-dir", default=None, metavar="DIR",
                   help="--auto: trial cache and trials.jsonl (default: OUT.search); a re-run resumes from it")
    p.add_argument("--finalists", type=nonneg_int, default=3, metavar="N",
                   help="--auto: export the N within-budget configurations with the most int8 MACs and time them in "
                        "the target's runtime, interleaved with fp32; the fastest wins (0: most int8 MACs wins)")
    p.add_argument("--latency-size", type=_size, default=(96, 96), metavar="HxW",
                   help="--auto: LR input size the finalists are timed at (default 96x96)")
    p.add_argument("--analyze", action="store_true",
                   help="per-layer sensitivity: PSNR-Y drop vs HR (dB) when each conv alone is int8, worst first")
    p.add_argument("--analyze-json", default=None, metavar="FILE", help="write the sensitivity table as JSON")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_quantize, latency_factory=None)
