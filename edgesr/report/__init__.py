"""The run report: report.json (schema ``report.schema.json``), report.md and report.html with PNG plots and
side-by-side crops, built from already-measured results (``build_report(results, out_dir)``).

Only numpy and matplotlib (Agg) are needed: building a report never imports torch or a runtime.
"""

from .build import MEASURED_IN, ReportError, add_drops, build_report, label, load_report, normalize_row
from .schema import SCHEMA_ID, SCHEMA_PATH, load_schema, validate

__all__ = ["build_report", "normalize_row", "add_drops", "label", "load_report", "ReportError", "MEASURED_IN",
           "SCHEMA_ID", "SCHEMA_PATH", "load_schema", "validate"]
