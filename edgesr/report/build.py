"""report.json, report.md and report.html (+ PNG plots and crops beside them) from already-measured results.

The input is a plain dict, so a report can be built from any numbers (the tests use synthetic ones)::

    {
      "title": str, "command": str, "recipe": dict | None,
      "environment": {"edgesr": str, "machine": str, ...},
      "datasets": [{"name": str, "images": int, "source": str}],
      "rows": [row, ...],                      # see below; drop_db/drop_vs are computed here
      "sensitivity": {target: [{"layer": str, "drop_db": float}, ...]},
      "crops": [{"dataset", "image", "box": [y, x, h, w] (HR px), "runtime": str,
                 "hr": array | png, "bicubic": array | png,
                 "fp32": {"label": str, "image": array | png} | None, "int8": {...} | None}],
      "notes": [str],
    }

A row: model, scale, target (``pytorch`` or an export target), runtime, precision, dataset, images, psnr_y,
ssim_y, parity {max_abs, psnr}, latency_ms {median, p90, runs, threads, input_size}, size_bytes,
delegation {percent, ...}, measured_in (``runtime`` | ``pytorch-simulated`` | ``converted, not run``),
command, artifact, notes. Missing numbers are None. The JSON written is validated against
``report.schema.json`` before anything is published.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..io_utils import atomic_path
from ..metrics import paired_drop_se
from .rows import MEASURED_IN, ReportRow
from ..errors import EdgesrError
from . import crops as _crops
from . import plots as _plots
from ..quantize.config import describe
from .schema import SCHEMA_ID, validate

IMG_DIR = "img"
FILES = ("report.json", "report.md", "report.html")


class ReportError(EdgesrError):
    """Results that cannot be turned into a valid report."""


# -------------------------------------------------------------------------------------- rows
def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def label(row: dict[str, Any]) -> str:
    """How a row is named in figures and in ``drop_vs``: 'executorch int8', 'executorch int8 (simulated)'."""
    suffix = {"pytorch-simulated": " (simulated)", "converted, not run": " (not run)"}.get(row["measured_in"], "")
    return f"{row['target']} {row['precision']}{suffix}"


def normalize_row(row: ReportRow | dict[str, Any]) -> dict[str, Any]:
    """A row in the schema's shape: non-finite numbers become null (a parity PSNR of inf: identical)."""
    r = row.to_json() if isinstance(row, ReportRow) else dict(row)
    if r.get("measured_in") not in MEASURED_IN:
        raise ReportError(f"row {r.get('target')} {r.get('precision')}: measured_in must be one of "
                          f"{', '.join(MEASURED_IN)}, got {r.get('measured_in')!r}")
    out: dict[str, Any] = {k: r.get(k) for k in ("model", "scale", "target", "runtime", "precision", "dataset")}
    out["images"] = r.get("images")
    out["psnr_y"], out["ssim_y"] = _finite(r.get("psnr_y")), _finite(r.get("ssim_y"))
    par = r.get("parity")
    if par:
        psnr = par.get("psnr")
        out["parity"] = {"max_abs": _finite(par.get("max_abs")), "psnr": _finite(psnr)}
        if isinstance(psnr, (int, float)) and math.isinf(psnr) and psnr > 0:
            out["parity"]["identical"] = True
        if par.get("reference"):
            out["parity"]["reference"] = str(par["reference"])
    else:
        out["parity"] = None
    lat = r.get("latency_ms")
    if lat and _finite(lat.get("median")) is not None:
        out["latency_ms"] = {"median": float(lat["median"]), "p90": float(lat.get("p90", lat["median"]))}
        for k in ("runs", "threads", "input_size"):
            if lat.get(k) is not None:
                out["latency_ms"][k] = list(lat[k]) if k == "input_size" else int(lat[k])
    else:
        out["latency_ms"] = None
    out["size_bytes"] = int(r["size_bytes"]) if r.get("size_bytes") is not None else None
    d = r.get("delegation")
    if d and d.get("percent") is not None:
        out["delegation"] = {"percent": float(d["percent"])}
        if d.get("backend"):
            out["delegation"]["backend"] = str(d["backend"])
        if d.get("not_delegated") is not None:
            out["delegation"]["not_delegated"] = {str(k): int(v) for k, v in d["not_delegated"].items()}
    else:
        out["delegation"] = None
    out["measured_in"] = r["measured_in"]
    if out["measured_in"] == "converted, not run":  # never numbers for a model that did not run
        out["psnr_y"] = out["ssim_y"] = out["parity"] = out["latency_ms"] = None
    out["command"] = str(r.get("command") or "")
    out["artifact"] = r.get("artifact")
    out["notes"] = [str(n) for n in r.get("notes") or []]
    if _finite(r.get("reference_psnr_y")) is not None:
        out["reference_psnr_y"] = float(r["reference_psnr_y"])
    for k in ("per_image_psnr_y", "reference_per_image_psnr_y"):
        if r.get(k):
            out[k] = {str(n): float(v) for n, v in r[k].items() if _finite(v) is not None}
    if out["psnr_y"] is None:
        out.pop("per_image_psnr_y", None)
    out["drop_db"], out["drop_vs"], out["drop_se_db"] = None, None, None
    return out


def drop_se(ref: dict[str, float] | None, row: dict[str, float] | None) -> float | None:
    """Standard error of a dataset's mean drop, over the images both rows measured (per image, by name).

    A mean over a few images moves with which images they are: EIMN-A x4 int8 (ExecuTorch) loses 0.030 dB on
    Set5 and gains 0.004 when the same images are edge-padded by 4 px and cropped back."""
    if not ref or not row:
        return None
    names = [k for k in row if k in ref]
    return paired_drop_se([ref[k] for k in names], [row[k] for k in names])


def add_drops(rows: list[dict[str, Any]]) -> None:
    """``drop_db`` = PSNR-Y of the fp32 reference − this row's (positive: worse).

    The reference is the fp32 artifact of the same runtime for runtime-measured int8/fp16 rows (same windows,
    so the drop is the precision alone); for a simulated int8 row, the PyTorch fp32 model on the input the int8
    graph saw (``reference_psnr_y``: whole images edge-padded to the graph's size multiple); otherwise the
    PyTorch fp32 model on whole images.
    """
    def find(r: dict[str, Any], target: str) -> dict[str, Any] | None:
        for c in rows:
            if (c["model"], c["scale"], c["dataset"], c["target"], c["precision"], c["measured_in"]) == \
                    (r["model"], r["scale"], r["dataset"], target, "fp32", "runtime") and c["psnr_y"] is not None:
                return c
        return None

    for r in rows:
        r.setdefault("drop_se_db", None)
        if r["psnr_y"] is None:
            continue
        ref = None
        if r["precision"] != "fp32" and r["measured_in"] == "runtime":
            ref = find(r, r["target"])
        if ref is None:
            ref = find(r, "pytorch")
        if ref is None or ref is r:
            continue
        if r["measured_in"] == "pytorch-simulated" and r.get("reference_psnr_y") is not None:
            r["drop_db"], r["drop_vs"] = r["reference_psnr_y"] - r["psnr_y"], f"{label(ref)} (same padded input)"
            r["drop_se_db"] = drop_se(r.get("reference_per_image_psnr_y"), r.get("per_image_psnr_y"))
            continue
        r["drop_db"], r["drop_vs"] = ref["psnr_y"] - r["psnr_y"], label(ref)
        r["drop_se_db"] = drop_se(ref.get("per_image_psnr_y"), r.get("per_image_psnr_y"))


# ------------------------------------------------------------------------------------- build
def build_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir`` (report.json/.md/.html + img/) atomically; returns the path of report.html.

    Everything is built in a temporary folder beside ``out_dir`` and swapped in at the end, so an
    interrupted build leaves the previous report (or none), never half of one.
    """
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        tmp.mkdir()
        _build_into(results, tmp)
        os.chmod(tmp, 0o755)
    return out_dir / "report.html"


def _build_into(results: dict[str, Any], d: Path) -> None:
    (d / IMG_DIR).mkdir()
    rows = [normalize_row(r) for r in results.get("rows", [])]
    add_drops(rows)
    sens = results.get("sensitivity") or {}
    if isinstance(sens, dict):
        sens = [{"target": t, "layers": layers} for t, layers in sens.items()]
    sens = [{"target": str(t["target"]),
             "layers": [{"layer": str(x["layer"]), "drop_db": float(x["drop_db"]),
                         **({"sqnr_db": _finite(x["sqnr_db"])} if "sqnr_db" in x else {})}
                        for x in t["layers"] if _finite(x.get("drop_db")) is not None]} for t in sens]
    top = int(results.get("sensitivity_layers", 15))
    search = {str(t): s for t, s in (results.get("search") or {}).items()}

    plots = []
    for kind, title, fn in (
            ("accuracy_latency", "Accuracy vs latency per runtime", lambda p: _plots.accuracy_latency(rows, p)),
            ("precision_bars", "fp32 vs int8 PSNR-Y", lambda p: _plots.precision_bars(rows, p)),
            ("sensitivity", "Per-layer int8 sensitivity", lambda p: _plots.sensitivity(sens, p, top=top)),
            ("search", "int8 search: validation drop vs int8 share of MACs and vs measured latency (finalists)",
             lambda p: _plots.search(search, p))):
        rel = f"{IMG_DIR}/{kind}.png"
        if fn(d / rel) is not None:
            plots.append({"kind": kind, "title": title, "path": rel})

    crop_entries = []
    for i, c in enumerate(results.get("crops") or []):
        hr, bic = _crops.load(c["hr"]), _crops.load(c["bicubic"])
        f32, i8 = c.get("fp32"), c.get("int8")
        runtime = str(c["runtime"])
        rel = f"{IMG_DIR}/crop-{i}-{_slug(runtime)}.png"
        labels = (f32["label"] if f32 else "fp32", i8["label"] if i8 else "int8")
        _crops.crop_figure(hr, bic, _crops.load(f32["image"]) if f32 else None,
                           _crops.load(i8["image"]) if i8 else None, d / rel,
                           f"{c['dataset']}/{c['image']}, {runtime}: HR box {list(c['box'])} (y, x, h, w)", labels)
        crop_entries.append({"dataset": str(c["dataset"]), "image": str(c["image"]), "runtime": runtime,
                             "box": [int(v) for v in c["box"]], "fp32": labels[0] if f32 else None,
                             "int8": labels[1] if i8 else None, "path": rel})

    env = {"edgesr": __version__, **(results.get("environment") or {})}
    report = {
        "schema": SCHEMA_ID,
        "title": str(results.get("title") or "edgesr report"),
        "created": results.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": str(results.get("command") or ""),
        "recipe": results.get("recipe"),
        "environment": env,
        "datasets": list(results.get("datasets") or []),
        "rows": rows,
        "sensitivity": sens,
        "plots": plots,
        "crops": crop_entries,
        "notes": [str(n) for n in results.get("notes") or []],
        "verdict": verdicts(rows, search),
        "search": search,
    }
    errors = validate(report)
    if errors:
        raise ReportError(f"internal: report.json does not match its schema: {errors[0]}"
                          + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""))
    (d / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (d / "report.md").write_text(to_markdown(report))
    (d / "report.html").write_text(to_html(report))
    for p in [*d.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


# The speed-up a verdict calls faster: interleaved medians of one run on a shared 2-core host differ by a few
# per cent between identical artifacts (the quickstart's LiteRT int8 timed 1.005x its fp32 at 96x96)
FASTER = 1.05


def verdicts(rows: list[dict[str, Any]], search: dict[str, Any]) -> list[dict[str, Any]]:
    """Per runtime with int8 rows: what to ship, read from the rows (drop, speed-up) and the search (budget)."""
    out = []
    for target in dict.fromkeys(r["target"] for r in rows if r["precision"] == "int8"):
        i8 = [r for r in rows if r["target"] == target and r["precision"] == "int8"]
        ran = [r for r in i8 if r["measured_in"] == "runtime"] or [r for r in i8 if r["psnr_y"] is not None]
        drops = {r["dataset"]: r["drop_db"] for r in ran if r["drop_db"] is not None}
        ses = {r["dataset"]: r["drop_se_db"] for r in ran if r["drop_db"] is not None and r.get("drop_se_db")}
        f32 = next((r for r in rows if r["target"] == target and r["precision"] == "fp32"
                    and r["measured_in"] == "runtime" and r["latency_ms"]), None)
        q = next((r for r in i8 if r["measured_in"] == "runtime" and r["latency_ms"]), None)
        speed = round(f32["latency_ms"]["median"] / q["latency_ms"]["median"], 3) if f32 and q else None
        s = search.get(target) or {}
        chosen = s.get("chosen") or {}
        config = describe(chosen["config"]) if "config" in chosen else "as configured"
        if chosen.get("mode") == "qat":
            config = f"QAT from {config}"
        budget = s.get("budget_db")
        within = None
        if budget is not None:
            within = bool(s.get("within_budget")) and all(d <= budget for d in drops.values())
        where = "in its runtime" if q is not None else ("simulated in PyTorch" if ran else "not run")
        parts = [f"{target} int8 ({config}): drop "
                 + ", ".join(f"{k} {_pm(v, ses.get(k))} dB" for k, v in drops.items())
                 if drops else f"{target} int8 ({config}): no accuracy"]
        parts.append(f"{speed:.2f}x the fp32 speed {where}" if speed is not None else f"no latency ({where})")
        if budget is not None:
            parts.append(("within" if within else "OVER") + f" the {budget:g} dB budget")
        advice = ("ship int8" if within and (speed or 0) >= FASTER else
                  f"keep fp32: int8 is not faster here (under {FASTER:g}x)" if within and speed is not None else
                  "over budget: see the search trials" if within is False else "")
        out.append({"target": target, "config": config, "drop_db": drops,
                    "validation_drop_db": chosen.get("drop_db"), "int8_mac_share": chosen.get("int8_mac_share"),
                    "speedup": speed, "budget_db": budget, "within_budget": within,
                    "text": "; ".join(parts) + (f" -> {advice}" if advice else "")})
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "x"


# ---------------------------------------------------------------------------------- formatting
def _f(v: Any, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _pm(drop: float, se: float | None) -> str:
    return f"{drop:+.3f}" + (f" ± {se:.3f}" if se else "")


def cells(r: dict[str, Any]) -> dict[str, str]:
    """The table's text cells of one row (shared by Markdown and HTML)."""
    par = r["parity"]
    if par is None:
        parity = "—"
    else:
        psnr = "identical" if par.get("identical") else _f(par["psnr"], ".2f") + " dB"
        parity = f"{_f(par['max_abs'], '.1e')} / {psnr}"
    lat = r["latency_ms"]
    size = r["size_bytes"]
    d = r["delegation"]
    return {
        "model": f"{r['model']} x{r['scale']}",
        "target": r["target"],
        "runtime": r["runtime"] or "",
        "precision": r["precision"],
        "dataset": r["dataset"],
        "psnr": _f(r["psnr_y"], ".3f"),
        "ssim": _f(r["ssim_y"], ".4f"),
        "drop": "—" if r["drop_db"] is None else f"{_pm(r['drop_db'], r.get('drop_se_db'))} vs {r['drop_vs']}",
        "parity": parity,
        "latency": "—" if lat is None else f"{lat['median']:.2f} / {lat['p90']:.2f}",
        "size": "—" if size is None else f"{size / 1e6:.2f} MB",
        "delegation": "—" if d is None else f"{d['percent']:.1f} %",
        "measured_in": r["measured_in"],
        "command": r["command"],
    }


HEADERS = [("model", "model"), ("target", "target"), ("runtime", "runtime"), ("precision", "precision"),
           ("dataset", "dataset"), ("psnr", "PSNR-Y (dB)"), ("ssim", "SSIM-Y"), ("drop", "drop (dB)"),
           ("parity", "parity max|Δ| / PSNR"), ("latency", "latency median / p90 (ms)"), ("size", "size"),
           ("delegation", "delegated"), ("measured_in", "measured in"), ("command", "reproduce")]

LEGEND = {
    "runtime": "run in the real runtime on this machine (or PyTorch eager for the pytorch rows)",
    "pytorch-simulated": "int8 simulated with PyTorch fake-quant; latency is PyTorch's, not a runtime's",
    "converted, not run": "exported and inspected, but this machine cannot run it (Core ML off macOS): no numbers",
}


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(rep: dict[str, Any]) -> str:
    lines = [f"# {rep['title']}", "", f"Built {rep['created']} by `{rep['command']}` (edgesr "
             f"{rep['environment'].get('edgesr')}" + (f", {rep['environment']['machine']}"
                                                       if rep["environment"].get("machine") else "") + ").", ""]
    if rep.get("verdict"):
        lines += ["## Verdict", ""] + [f"- {v['text']}" for v in rep["verdict"]] + [""]
    if rep["datasets"]:
        lines += ["Datasets: " + ", ".join(f"{d['name']} ({d['images']} images)" for d in rep["datasets"]) + ".", ""]
    lines += ["## Results", "",
              "| " + " | ".join(_md_escape(h) for _, h in HEADERS) + " |",
              "|" + "|".join("---" for _ in HEADERS) + "|"]
    for r in rep["rows"]:
        c = cells(r)
        c["command"] = f"`{c['command']}`" if c["command"] else ""
        lines.append("| " + " | ".join(_md_escape(c[k]) for k, _ in HEADERS) + " |")
    lines += ["", "Measured in: " + "; ".join(f"**{k}**: {v}" for k, v in LEGEND.items()) + ".",
              "Drop: PSNR-Y of the named fp32 row minus this row's (positive = worse), ± the standard error of "
              "its mean over the dataset's images. Parity: max |Δ| of the "
              "runtime output vs the PyTorch model it was exported from (fp32, or the fake-quant int8 model) on "
              "the same windows, and the PSNR between them. Latency: one artifact-sized input window.", ""]
    if rep["plots"]:
        lines += ["## Plots", ""] + [f"![{p['title']}]({p['path']})" for p in rep["plots"]] + [""]
    if rep["crops"]:
        lines += ["## Crops", ""]
        lines += [f"![{c['dataset']}/{c['image']} {c['runtime']}]({c['path']})" for c in rep["crops"]] + [""]
    for s in rep["sensitivity"]:
        lines += [f"## Per-layer sensitivity: {s['target']}", "", "| layer | PSNR-Y drop vs HR, only this layer int8 (dB) |", "|---|---|"]
        lines += [f"| {_md_escape(x['layer'])} | {x['drop_db']:.3f} |" for x in s["layers"]] + [""]
    if rep["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in rep["notes"]] + [""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d1d1f;max-width:1500px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:12.5px}th,td{border:1px solid #d0d0d7;padding:4px 7px;vertical-align:top}
th{background:#f0f0f5;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.sim td{background:#fff8e6}tr.notrun td{background:#f4f4f4;color:#666}
code{font-size:11.5px;word-break:break-all}img{max-width:100%;border:1px solid #e0e0e6;margin:6px 0}
.meta{color:#555;font-size:13px}.legend li{font-size:13px}
"""

_NUMERIC = {"psnr", "ssim", "drop", "parity", "latency", "size", "delegation"}


def to_html(rep: dict[str, Any]) -> str:
    """A self-contained page (inline CSS, no scripts); images are the relative PNGs in img/."""
    e = html.escape
    env = rep["environment"]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(rep['title'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>{e(rep['title'])}</h1>",
           f'<p class="meta">Built {e(rep["created"])} by <code>{e(rep["command"])}</code> — edgesr '
           f"{e(str(env.get('edgesr')))}" + (f", {e(str(env['machine']))}" if env.get("machine") else "") + "</p>"]
    if rep.get("verdict"):
        out.append('<h2>Verdict</h2><ul id="verdict">' + "".join(f"<li>{e(v['text'])}</li>" for v in rep["verdict"])
                   + "</ul>")
    if rep["datasets"]:
        out.append('<p class="meta">Datasets: ' + ", ".join(f"{e(d['name'])} ({d['images']} images)"
                                                            for d in rep["datasets"]) + "</p>")
    out += ["<h2>Results</h2>", '<table id="results"><thead><tr>'
            + "".join(f"<th>{e(h)}</th>" for _, h in HEADERS) + "</tr></thead><tbody>"]
    for r in rep["rows"]:
        c = cells(r)
        cls = {"pytorch-simulated": "sim", "converted, not run": "notrun"}.get(r["measured_in"], "run")
        tds = []
        for k, _ in HEADERS:
            if k == "command":
                tds.append(f"<td><code>{e(c[k])}</code></td>")
            else:
                tds.append(f'<td{" class=num" if k in _NUMERIC else ""}>{e(c[k])}</td>')
        out.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    out.append('<ul class="legend">' + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in LEGEND.items())
               + "<li><b>drop</b>: PSNR-Y of the named fp32 row minus this row's (positive = worse), ± the "
                 "standard error of its mean over the dataset's images</li>"
               + "<li><b>parity</b>: max |Δ| of the runtime output vs the PyTorch model it was exported from "
                 "(fp32, or the fake-quant int8 model) on the same windows, and the PSNR between them</li>"
               + "<li><b>latency</b>: one artifact-sized input window, after warm-up</li></ul>")
    if rep["plots"]:
        out.append("<h2>Plots</h2>")
        out += [f'<figure><img src="{e(p["path"])}" alt="{e(p["title"])}"><figcaption>{e(p["title"])}'
                f"</figcaption></figure>" for p in rep["plots"]]
    if rep["crops"]:
        out.append("<h2>Crops: HR / bicubic / fp32 / int8 / error heat-map</h2>")
        out += [f'<figure><img src="{e(c["path"])}" alt="{e(c["dataset"])}/{e(c["image"])} {e(c["runtime"])}">'
                f"<figcaption>{e(c['dataset'])}/{e(c['image'])} — {e(c['runtime'])}</figcaption></figure>"
                for c in rep["crops"]]
    for s in rep["sensitivity"]:
        out.append(f"<h2>Per-layer sensitivity: {e(s['target'])}</h2><table><thead><tr><th>layer</th>"
                   "<th>PSNR-Y drop vs HR, only this layer int8 (dB)</th></tr></thead><tbody>")
        out += [f"<tr><td>{e(x['layer'])}</td><td class=num>{x['drop_db']:.3f}</td></tr>" for x in s["layers"]]
        out.append("</tbody></table>")
    if rep["notes"]:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in rep["notes"]) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def load_report(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


__all__ = ["build_report", "normalize_row", "add_drops", "label", "to_markdown", "to_html", "cells", "ReportError",
           "MEASURED_IN", "load_report"]
