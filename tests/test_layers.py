"""The package's structure follows the pipeline a user walks: nothing imports a later stage, and no private
name crosses a package boundary."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edgesr"

# Leaf modules first, then the pipeline order: models -> data/metrics -> reparam -> train -> quantize -> export
# -> report -> run -> cli. A module may import its own layer and those before it.
ORDER = [
    {"errors", "io_utils", "config", "targets", "host", "versions", "lazy", "__init__", "zoo"},
    {"models", "cliargs"},   # cliargs: the verbs' shared flags, which build a ModelSpec
    {"data", "metrics", "evaluate"},
    {"reparam"},
    {"train"},
    {"quantize"},
    {"export"},
    {"report"},
    {"run"},
    {"cli", "__main__"},
]


def _layer(top: str) -> int:
    return next(i for i, names in enumerate(ORDER) if top in names)


def _edgesr_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported top-level edgesr module, names) for every edgesr import in ``path``."""
    rel = path.relative_to(PKG).with_suffix("").parts
    package = list(rel[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                parts = [*base, *((node.module or "").split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "edgesr":
                parts = node.module.split(".")[1:]
            else:
                continue
            names = [a.name for a in node.names]
            if not parts:  # `from .. import x` at the top: x is a module or a name of edgesr/__init__
                for n in names:
                    out.append((node.lineno, n if (PKG / n).exists() or (PKG / f"{n}.py").exists() else "__init__",
                                [n]))
            else:
                out.append((node.lineno, parts[0], names + [p for p in parts[1:]]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "edgesr" and len(a.name.split(".")) > 1:
                    out.append((node.lineno, a.name.split(".")[1], a.name.split(".")[2:]))
    return out


def test_no_import_runs_up_the_pipeline_and_no_private_name_crosses_packages():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        top = path.relative_to(PKG).parts[0].removesuffix(".py")
        for line, target, names in _edgesr_imports(path):
            if target == top:
                continue
            if _layer(target) > _layer(top):
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: {top} imports {target} (a later stage)")
            private = [n for n in names if n.startswith("_") and n not in ("__version__", "__init__")]
            if private:
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: private {private} from {target}")
    assert not bad, "\n".join(bad)


def test_every_package_module_has_a_layer():
    tops = {p.relative_to(PKG).parts[0].removesuffix(".py") for p in PKG.rglob("*.py")}
    known = set().union(*ORDER)
    assert tops <= known, f"modules without a place in the pipeline order: {sorted(tops - known)}"


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The test above can fail: a models module importing export is reported."""
    fake = PKG / "models" / "_layer_probe_tmp.py"
    fake.write_text("from ..export import spec\n")
    try:
        hits = [t for _, t, _ in _edgesr_imports(fake)]
        assert hits == ["export"] and _layer("export") > _layer("models")
    finally:
        fake.unlink()


def test_cli_help_imports_no_torch():
    code = ("import sys, edgesr.cli; edgesr.cli.build_parser(); "
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], out
