"""The report's rows, read from the finished stages: one typed record per model × target × precision × dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..config import to_dict
from ..report.rows import ReportRow
from ..host import machine
from ..versions import versions
from . import stages
from .cache import StageResult
from .plan import Plan

# ------------------------------------------------------------------------------ results
def _read(result: StageResult) -> dict[str, Any]:
    return json.loads(result.path("check").read_text())


def _per_image(per_image: dict[str, dict[str, float]] | None) -> dict[str, float] | None:
    return {k: v["psnr_y"] for k, v in per_image.items()} if per_image else None


def collect(plan: Plan, done: dict[str, StageResult], command: str) -> dict[str, Any]:
    """Everything the report shows, from the finished stages (see edgesr.report.build for the format)."""
    from ..data.imresize import imresize

    r = plan.recipe
    name, scale = r.model.label, r.model.scale
    benches = stages.open_eval(r.data.eval, scale)
    rows: list[ReportRow] = []
    notes: list[str] = []
    crop_files: dict[str, list[Path]] = {}
    base = {"model": name, "scale": scale}
    for unit, meta in plan.checks.items():
        res = done[unit]
        data = _read(res)
        crop_files[unit] = [res.dir / c for c in res.outputs.get("crops", [])]
        if meta["kind"] in ("pytorch", "simulated"):
            sim = meta["kind"] == "simulated"
            for ds, q in data["quality"].items():
                rows.append(ReportRow(**base, target=meta["target"], precision=meta["precision"], dataset=ds,
                                      runtime=f"PyTorch fake-quant (simulating {meta['target']})" if sim
                                      else "PyTorch eager",
                                      images=q["images"], psnr_y=q["psnr_y"], ssim_y=q["ssim_y"],
                                      latency_ms=data["latency_ms"],
                                      measured_in="pytorch-simulated" if sim else "runtime", command=data["command"],
                                      reference_psnr_y=q.get("reference_psnr_y"),
                                      per_image_psnr_y=_per_image(q.get("per_image")),
                                      reference_per_image_psnr_y=_per_image(q.get("reference_per_image")),
                                      notes=["whole images; latency is PyTorch eager on one window"] if not sim else
                                      ["int8 simulated by fake-quant in PyTorch (whole images), not run in the "
                                       "runtime"]))
            continue
        label = f"{meta['target']} {meta['precision']}"
        notes += [f"{label}: {n.removeprefix(meta['precision'] + ': ')}" for n in data.get("notes", [])]
        a = data["artifact"]
        d = data.get("delegation")
        common = {**base, "target": meta["target"], "precision": meta["precision"],
                  "runtime": data["runtime"]["name"], "size_bytes": a.get("file_size_bytes"),
                  "delegation": {"percent": d["percent_delegated"], "backend": d.get("backend", ""),
                                 "not_delegated": d.get("not_delegated", {})} if d else None,
                  "command": data["command"], "artifact": a.get("path")}
        if data["status"] != "ran":
            for b in benches:
                rows.append(ReportRow(**common, dataset=b.name, images=len(b), measured_in="converted, not run",
                                      notes=[data["status"]]))
            continue
        p = data.get("parity") or {}
        for ds, q in data["quality"].items():
            rows.append(ReportRow(**common, dataset=ds, images=q["images"], psnr_y=q["psnr_y"], ssim_y=q["ssim_y"],
                                  parity={"max_abs": p.get("max_abs_diff"), "psnr": p.get("psnr_vs_torch_db"),
                                          "reference": _parity_reference(meta["precision"])} if p else None,
                                  latency_ms=data["latency_ms"], measured_in="runtime",
                                  per_image_psnr_y=_per_image(q.get("per_image"))))

    # crops: HR / bicubic from the data, fp32 / int8 from the stages, one figure per runtime
    crops = []
    windows = stages.crop_windows(benches, r.check.crops if r.check else 0, plan.size)
    bench0 = benches[0] if benches else None
    for i, win in enumerate(windows):
        pair = next(p for p in bench0.pairs if p.name == win.image)
        hr = pair.load_hr()[win.y * scale:(win.y + win.h) * scale, win.x * scale:(win.x + win.w) * scale]
        lr_u8 = pair.load_lr()[win.y:win.y + win.h, win.x:win.x + win.w]
        bic = imresize(lr_u8, scale=scale)
        # show the centre of the window (enough context around it was computed) at a zoom where pixels count
        ch, cw = min(win.h, max(32, win.h // 2)), min(win.w, max(32, win.w // 2))
        oy, ox = (win.h - ch) // 2 * scale, (win.w - cw) // 2 * scale
        view = (slice(oy, oy + ch * scale), slice(ox, ox + cw * scale))
        box = [win.y * scale + oy, win.x * scale + ox, ch * scale, cw * scale]

        def pick(unit: str, lab: str) -> dict[str, Any] | None:
            files = crop_files.get(unit) or []
            return {"label": lab, "image": _load_png(files[i])[view]} if i < len(files) else None

        groups: list[tuple[str, dict | None, dict | None]] = []
        sims = [t for t in plan.quantized if f"check pytorch-int8-{t}" in plan.checks]
        if "check pytorch-fp32" in plan.checks or sims:
            for target in sims or [""]:
                groups.append(("PyTorch" + (f" (int8 simulating {target})" if target else ""),
                               pick("check pytorch-fp32", "PyTorch fp32"),
                               pick(f"check pytorch-int8-{target}", f"{target} int8 (simulated)") if target else None))
        for target in dict.fromkeys(t for t, _ in plan.artifacts):
            f32, i8 = pick(f"check {target}-fp32", f"{target} fp32"), pick(f"check {target}-int8", f"{target} int8")
            if f32 or i8:
                groups.append((target, f32, i8))
        for runtime, f32, i8 in groups:
            crops.append({"dataset": win.dataset, "image": win.image, "box": box, "runtime": runtime,
                          "hr": hr[view], "bicubic": bic[view], "fp32": f32, "int8": i8})

    sens, search = {}, {}
    for target in plan.quantized:
        res = done.get(f"quantize {target}")
        if res is not None and res.outputs.get("sensitivity"):
            sens[target] = json.loads(res.path("sensitivity").read_text())
        if res is not None and res.outputs.get("auto"):
            search[target] = json.loads(res.path("auto").read_text())
            if not search[target]["within_budget"]:
                notes += [f"{target}: {n}" for n in search[target]["notes"]]
    not_run = sorted({row.target for row in rows if row.measured_in == "converted, not run"})
    if not_run:
        notes.insert(0, f"{', '.join(not_run)}: converted, not run on this machine (no numbers are reported for it)")
    return {
        "title": (r.report.title if r.report and r.report.title else f"edgesr run: {name} x{scale}"),
        "command": command,
        "recipe": to_dict(r),
        "environment": {"machine": machine(), "python": sys.version.split()[0], "versions": versions()},
        "datasets": [{"name": b.name, "images": len(b), "source": b.source} for b in benches],
        "rows": [row.to_json() for row in rows],
        "sensitivity": sens,
        "search": search,
        "sensitivity_layers": r.report.sensitivity_layers if r.report else 15,
        "crops": crops,
        "notes": list(dict.fromkeys(notes)),
    }


def _load_png(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _parity_reference(precision: str) -> str:
    what = "the fake-quant int8 model" if precision == "int8" else "the fp32 model"
    return f"PyTorch ({what} the artifact was exported from), same windows"


def summary(report: dict[str, Any]) -> str:
    """The console table printed at the end of a run."""
    lines = [f"{'row':<34} {'dataset':<18} {'PSNR-Y':>8} {'drop':>7} {'ms':>8}  measured in"]
    for row in report["rows"]:
        lab = f"{row['target']} {row['precision']}"
        psnr = "-" if row["psnr_y"] is None else f"{row['psnr_y']:.3f}"
        drop = "-" if row["drop_db"] is None else f"{row['drop_db']:+.3f}"
        lat = "-" if row["latency_ms"] is None else f"{row['latency_ms']['median']:.1f}"
        lines.append(f"{lab:<34} {row['dataset'][:18]:<18} {psnr:>8} {drop:>7} {lat:>8}  {row['measured_in']}")
    return "\n".join(lines)


__all__ = ["collect", "summary"]
