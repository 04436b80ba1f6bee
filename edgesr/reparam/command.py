"""``edgesr reparam``: expand a model for training, collapse it back, or write its deploy form.

Only argparse-level imports at module level (``edgesr --help`` stays instant); torch is imported by
the handler.
"""

from __future__ import annotations

import argparse

from ..cliargs import add_model_args, model_spec

KIND_CHOICES = ("repvgg", "ecb", "sesr")

DESCRIPTION = """\
Structural reparameterization of a model checkpoint. Exactly one of:

  --expand KIND  multi-branch training blocks in place of the eligible convs (repvgg: k×k + 1×1 +
                 identity; ecb: ECBSR's 3×3 + 1×1→3×3 + Sobel-x/y + Laplacian (+ identity); sesr:
                 k×k to --expansion channels, 1×1 back, + identity). The expanded model computes the
                 same function as the input; train it with `edgesr train` (model.weights = the output,
                 model.expand = KIND).
  --collapse     every multi-branch block back into one conv: a plain checkpoint with the registry
                 model's keys.
  --deploy       (default) collapse + fold norms into the convs that consume them + SCNet's Shift8 as
                 convs + no in-place ops: the graph quantization and export consume.

The output is an edgesr checkpoint whose "reparam" entry records the structure, so
`edgesr eval --weights OUT` and edgesr.models.create(..., weights=OUT) rebuild it before loading.
Every transform is exact up to float rounding; the command checks it on a random input and prints the
largest difference."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reparam`` verb to the ``edgesr`` command."""
    p = sub.add_parser("reparam", help="expand / collapse / deploy a model (structural reparameterization)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, "weights file (raw state_dict, BasicSR or edgesr checkpoint, also an expanded one) or "
                       "'zoo'; default: random init")
    p.add_argument("--out", required=True, help="output edgesr checkpoint (written atomically)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--expand", choices=KIND_CHOICES, metavar="KIND",
                      help=f"expand for training: {', '.join(KIND_CHOICES)}")
    mode.add_argument("--collapse", action="store_true", help="collapse multi-branch blocks into plain convs")
    mode.add_argument("--deploy", action="store_true", help="deploy form (the default)")
    p.add_argument("--expansion", type=int, default=None, metavar="N",
                   help="sesr: hidden channels of each block (default 256; >= the conv's output channels)")
    p.add_argument("--depth-multiplier", type=float, default=None, metavar="M",
                   help="ecb: width of the 1×1→3×3 branch as a multiple of the output channels (default 2)")
    p.add_argument("--shift", choices=("slice", "depthwise", "dense"), default=None,
                   help="deploy: how SCNet's Shift8 is written (default: depthwise, the fastest measured "
                        "with ExecuTorch XNNPACK; see benchmarks/reparam.py)")
    p.set_defaults(func=cmd_reparam)


def cmd_reparam(args: argparse.Namespace) -> int:
    import copy
    from pathlib import Path

    import torch

    from ..errors import UsageError
    from ..models import describe, min_size, resolve_weights, save_checkpoint, size_multiple
    from ..models.checkpoint import is_edgesr_checkpoint, read_checkpoint
    from . import collapse, deploy, expand, load, record_of

    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"output folder does not exist: {out.parent}")
    if args.expansion is not None and args.expand != "sesr":
        raise UsageError("--expansion only applies to --expand sesr")
    if args.depth_multiplier is not None and args.expand != "ecb":
        raise UsageError("--depth-multiplier only applies to --expand ecb")
    if args.shift is not None and (args.expand or args.collapse):
        raise UsageError("--shift only applies to --deploy")
    spec = model_spec(args)
    model = load(spec)
    before = copy.deepcopy(model)
    if args.expand:
        options = {k: v for k, v in (("expansion", args.expansion), ("depth_multiplier", args.depth_multiplier))
                   if v is not None}
        model, what = expand(model, args.expand, **options), f"expanded ({args.expand})"
    elif args.collapse:
        if not record_of(model).get("expand"):
            raise UsageError(f"{args.weights or 'the model'} is not expanded: nothing to collapse")
        model, what = collapse(model), "collapsed"
    else:
        model, what = deploy(model, shift=args.shift), "deployed"
    mult = max(8, size_multiple(model))
    size = mult * max(2, -(-min_size(model) // mult))  # >= min size, a multiple of the model's size multiple
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((model.eval()(x) - before.eval()(x)).abs().max())
    config, recipe, extra = {}, None, {}
    if args.weights is not None:
        ckpt = read_checkpoint(resolve_weights(spec))
        if is_edgesr_checkpoint(ckpt):
            config, recipe = ckpt.get("config") or {}, ckpt.get("recipe")
            extra = {k: ckpt[k] for k in ("train",) if k in ckpt}
    extra["reparam"] = record_of(model)
    extra["source"] = str(args.weights) if args.weights is not None else None
    save_checkpoint(out, model, config=config or None, recipe=recipe, extra=extra)
    print(f"{describe(spec)} {what}: {sum(p.numel() for p in model.parameters()):,} weights, "
          f"max |Δ| vs input model {diff:.2e} on a random {size}×{size} input -> {out}")
    return 0
