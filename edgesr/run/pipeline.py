"""``edgesr run``: the stages of the plan run in order (each cached and published atomically), then the report.

:mod:`edgesr.run.plan` turns the recipe into stages, :mod:`edgesr.run.console` shows them and handles signals,
:mod:`edgesr.run.rows` reads the finished stages into the report's rows.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import EdgesrError, one_line
from .cache import RunError, StageResult, clean_stale, run_cached, run_lock
from .console import STOP, Display, captured, console, sigterm_as_interrupt
from .plan import LOGS_DIR, REPORT_DIR, Plan, RunInterrupted, Unit, build_plan, preflight, prepare_out
from .recipe import RunRecipe
from .rows import collect, summary

# ------------------------------------------------------------------------------------- run
def run(r: RunRecipe, out: str | Path, *, command: str = "", progress: bool = True,
        verbose: bool = False) -> Path | None:
    """Run every stage of ``r`` into ``out`` (cached, resumable) and build the report; returns report.html
    (None with ``report: null``)."""
    import warnings

    preflight(r)               # inputs first: a bad input leaves no trace, not even an empty --out
    out = prepare_out(Path(out))
    with run_lock(out), sigterm_as_interrupt(), warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        clean_stale(out)
        plan = build_plan(r, out, progress)
        stream, can_capture = console()
        verbose = verbose or not can_capture
        total = len(plan.units) + (r.report is not None)
        display = Display(stream, total, enabled=progress)
        display.line(f"edgesr run: {r.model.label} x{r.model.scale} -> {out} ({total} stages; "
                     f"library output in {out / LOGS_DIR})")
        done: dict[str, StageResult] = {}
        for i, unit in enumerate(plan.units, 1):
            done[unit.name] = _run_unit(plan, unit, i, display, verbose)

        if r.report is None:  # `report: null`: numbers on the console only
            from ..report.build import add_drops, normalize_row

            rows = [normalize_row(x) for x in collect(plan, done, command)["rows"]]
            add_drops(rows)
            display.line(summary({"rows": rows}))
            html = None
        else:
            def report(d: Path) -> dict[str, Any]:
                from ..report import build_report

                return {"html": str(build_report(collect(plan, done, command), out / REPORT_DIR))}

            report_unit = Unit("report", f"report -> {out / REPORT_DIR}", "", report, "report")
            html = Path(_run_unit(plan, report_unit, len(plan.units) + 1, display, verbose,
                                  cache=False).outputs["html"])
            display.line(summary(json.loads((out / REPORT_DIR / "report.json").read_text())))
            stream.write(f"report: {html}\n")
        stream.flush()
        if stream is not sys.stdout:
            stream.close()
    return html


def _run_unit(plan: Plan, unit: Unit, i: int, display: Display, verbose: bool, cache: bool = True) -> StageResult:
    """Run one stage (or take it from the cache) with its output logged; every failure becomes one line."""
    from .cache import load_finished

    debug = os.environ.get("EDGESR_DEBUG") == "1"
    log = None if verbose else plan.out / LOGS_DIR / f"{unit.name.replace(' ', '-')}.log"
    cached = load_finished(plan.out, unit.name, unit.key) if cache else None
    if cached is not None:
        display.done(i, unit, cached)
        return cached

    def fn(d: Path) -> dict[str, Any]:
        outputs = unit.fn(d)
        if STOP.is_set():  # the signal's KeyboardInterrupt was swallowed inside a library callback
            raise KeyboardInterrupt
        return outputs

    try:
        with display.stage(i, unit), captured(log):
            if STOP.is_set():
                raise KeyboardInterrupt
            if cache:
                result = run_cached(plan.out, unit.name, unit.key, fn, info={"title": unit.title})
            else:
                start = time.perf_counter()
                outputs = fn(plan.out)
                result = StageResult(unit.name, "", plan.out, outputs, seconds=time.perf_counter() - start)
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted during '{unit.title}'; finished stages are kept in {plan.out / 'stages'}: "
                             "run the same command again to resume") from None
    except EdgesrError as exc:
        if debug:
            raise
        if exc.exit_code == 130:  # training saved its state on Ctrl-C/SIGTERM
            raise RunInterrupted(f"interrupted during '{unit.title}' ({one_line(exc)}); run the same command "
                                 "again to resume") from None
        raise RunError(f"stage '{unit.title}' failed: {one_line(exc)}" + (f" (log: {log})" if log else "")) from None
    except Exception as exc:  # noqa: BLE001 - a library failure inside a stage: one line, and where the log is
        if debug:
            raise
        err = RunError(f"stage '{unit.title}' failed: {type(exc).__name__}: {one_line(exc)}"
                       + (f" (log: {log})" if log else ""))
        err.exit_code = 1
        raise err from None
    display.done(i, unit, result)
    return result


__all__ = ["run", "build_plan", "Plan", "Unit", "preflight", "prepare_out", "collect", "summary",
           "RunInterrupted"]
