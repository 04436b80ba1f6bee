"""The documentation promise: a short README whose test command CI can read, links that resolve, and docs that
speak of the product (what it does, what was measured where and when), never of how it was made.

History belongs in CHANGELOG.md only.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 160
TEST_MARKER = "<!-- test-command -->"
TEST_COMMAND = 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/pytest -q'

# Development-history narrative: words about sessions, fixes and re-measurements instead of the product.
HISTORY = [re.compile(p, re.IGNORECASE) for p in (
    r"\bsessions? \d+",                 # "session 9", "sessions 7–8"
    r"\bsessions? \d+\s*[–-]\s*\d+",
    r"\bsession-\d+",                   # "the session-9 fix"
    r"before the fix",
    r"after the fix",
    r"\bre-measured\b",
    r"\bpre-fix\b",
    r"before session",
    r"this session",
)]
# File names: words are joined by _ or - there.
HISTORY_IN_NAMES = [re.compile(p, re.IGNORECASE) for p in (
    r"session[\s_-]*\d+",
    r"(pre|before|after)[\s_-]*(the[\s_-]*)?fix",
    r"re[\s_-]?measured",
)]
TEXT_TREES = ("docs/", "benchmarks/results/", "recipes/", "targets/")
EXCLUDED = {"CHANGELOG.md"}


def _tracked() -> list[str]:
    """Files git tracks, plus new files not ignored (so a doc is checked before its first commit)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return sorted({p for p in out.decode().split("\0") if p})


def _hits(text: str, patterns: list[re.Pattern]) -> list[str]:
    return [m.group(0) for p in patterns for m in [p.search(text)] if m]


def _text_lines(path: Path) -> list[tuple[int, str]]:
    try:
        return list(enumerate(path.read_text(encoding="utf-8").splitlines(), 1))
    except (UnicodeDecodeError, OSError):
        return []  # binary or vanished mid-edit


def _comment_and_docstring_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every comment and docstring line of a Python file."""
    try:
        source = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return list(enumerate(source.splitlines(), 1))  # cannot tell code from prose: check every line
    lines = source.splitlines()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                found += [(n, lines[n - 1]) for n in range(first.lineno, (first.end_lineno or first.lineno) + 1)]
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                found.append((tok.start[0], tok.string))
    except (tokenize.TokenError, SyntaxError):
        pass
    return sorted(found)


def _readme_lines() -> list[str]:
    return README.read_text(encoding="utf-8").splitlines()


def test_readme_is_short():
    n = len(_readme_lines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_readme_test_command_block_follows_the_marker():
    lines = _readme_lines()
    assert TEST_MARKER in lines, f"README.md: no line {TEST_MARKER!r} (.ci/run reads the test command after it)"
    i = lines.index(TEST_MARKER)
    block = lines[i + 1:i + 4]
    assert block == ["```bash", TEST_COMMAND, "```"], (
        f"README.md:{i + 2}: the line after {TEST_MARKER!r} must open a ```bash block holding exactly "
        f"{TEST_COMMAND!r}; found {block}")


def test_no_development_history_in_docs_results_recipes_or_file_names():
    offences = []
    for rel in _tracked():
        if rel in EXCLUDED:
            continue
        for word in _hits(rel, HISTORY_IN_NAMES):
            offences.append(f"{rel}: file name says {word!r}")
        path = ROOT / rel
        if rel == "README.md" or rel.startswith(TEXT_TREES):
            lines = _text_lines(path)
        elif rel.startswith("edgesr/") and rel.endswith(".py"):
            lines = _comment_and_docstring_lines(path)
        else:
            continue
        for n, text in lines:
            for word in _hits(text, HISTORY):
                offences.append(f"{rel}:{n}: {word!r} in {text.strip()[:120]!r}")
    assert not offences, ("development history outside CHANGELOG.md (say what the product does and where/when a "
                          "number was measured):\n" + "\n".join(offences))


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _anchors(md: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    out, in_code = set(), False
    for line in _text_lines(md):
        text = line[1]
        if text.startswith("```"):
            in_code = not in_code
        m = None if in_code else _HEADING.match(text)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def _broken_links(md: Path) -> list[str]:
    broken = []
    for n, text in _text_lines(md):
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # https:, mailto: ...
            file_part, _, anchor = target.partition("#")
            dest = (md.parent / file_part).resolve() if file_part else md.resolve()
            where = f"{md.relative_to(ROOT)}:{n}: {target}"
            try:
                dest.relative_to(ROOT)
            except ValueError:
                broken.append(f"{where} points outside the repository")
                continue
            if not dest.exists():
                broken.append(f"{where} does not exist")
            elif anchor and dest.suffix == ".md" and anchor.lower() not in _anchors(dest):
                broken.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return broken


def test_readme_links_resolve_inside_the_repository():
    text = README.read_text(encoding="utf-8")
    assert "../shared" not in text, "README.md mentions ../shared: it must not point outside the repository"
    broken = _broken_links(README)
    assert not broken, "README.md links:\n" + "\n".join(broken)


def test_docs_links_resolve():
    broken = [b for md in sorted((ROOT / "docs").glob("*.md")) for b in _broken_links(md)]
    assert not broken, "docs links:\n" + "\n".join(broken)
