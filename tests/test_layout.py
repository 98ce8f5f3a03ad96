"""The package layout: the packages pyproject installs, module borders, and a light ``import stitch``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]


def _package_dirs() -> set[str]:
    found = {".".join(p.parent.relative_to(REPO_ROOT).parts) for p in (REPO_ROOT / "stitch").rglob("__init__.py")}
    return found | {"stitch.cli"} if (REPO_ROOT / "cli" / "__init__.py").exists() else found


def test_pyproject_lists_every_package():
    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(cfg["packages"]) == _package_dirs()
    assert cfg["package-dir"] == {"stitch.cli": "cli"}
    assert tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]["stitch"] == \
        "stitch.cli.main:main"


def test_no_private_name_crosses_a_module_border():
    offenders = []
    for f in sorted(list((REPO_ROOT / "stitch").rglob("*.py")) + list((REPO_ROOT / "cli").rglob("*.py"))):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                offenders += [f"{f.relative_to(REPO_ROOT)}:{node.lineno} {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []


def test_import_stitch_is_light():
    """``import stitch`` and its CLI's import load neither torch, kornia, matplotlib nor scipy (stitch --help)."""
    code = ("import sys, stitch, stitch.cli.main; "
            "print(sorted(m for m in ('torch', 'kornia', 'matplotlib', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_names_resolve():
    import stitch

    for name in stitch.__all__:
        assert getattr(stitch, name) is not None, name
    assert sorted(stitch.__all__) == sorted(stitch._EXPORTS)  # every exported name is public, and only those


def _module_imports() -> dict[str, set[str]]:
    """Every module of stitch/ and cli/ (as stitch.cli) -> the project modules it imports (anywhere in it)."""
    files = {}
    for f in list((REPO_ROOT / "stitch").rglob("*.py")) + list((REPO_ROOT / "cli").rglob("*.py")):
        parts = f.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(("stitch", "cli") + parts[1:]) if parts[0] == "cli" else ".".join(parts)
        files[name.removesuffix(".__init__")] = f
    edges: dict[str, set[str]] = {m: set() for m in files}
    for m, f in files.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    target = next((c for c in (f"{base}.{a.name}", base) if c in files), None)
                    if target is not None and target != m and files[target].name != "__init__.py":
                        edges[m].add(target)
            elif isinstance(node, ast.Import):
                edges[m] |= {a.name for a in node.names if a.name in files and a.name != m
                             and files[a.name].name != "__init__.py"}
    return edges


def test_no_import_circle():
    """Modules import one way (lazy and type-only imports count too): no strongly connected component."""
    edges = _module_imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == []
    assert "stitch.panorama.config" in edges["stitch.panorama.graph"]  # the walk sees real edges


def test_install_hints_name_the_distribution():
    """pyproject's name is errors.DISTRIBUTION, and no hint names the unrelated PyPI project ``stitch``."""
    from stitch.errors import DISTRIBUTION, install_hint

    assert tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["name"] == DISTRIBUTION
    assert install_hint("ray") == "pip install 'stitch-toolkit[ray]'"
    texts = [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md"), *(REPO_ROOT / "stitch").rglob("*.py"),
             *(REPO_ROOT / "cli").rglob("*.py"), REPO_ROOT / "Makefile"]
    offenders = [str(f.relative_to(REPO_ROOT)) for f in texts if "'stitch[" in f.read_text() or
                 "install stitch " in f.read_text()]
    assert offenders == []


#: The longest a function of stitch/ or cli/ may be, in lines from its ``def`` to its last line.
MAX_FUNCTION_LINES = 80


def test_no_long_function():
    """Every function (methods and nested ones too) of stitch/ and cli/ is at most MAX_FUNCTION_LINES long."""
    offenders = []
    for f in sorted(list((REPO_ROOT / "stitch").rglob("*.py")) + list((REPO_ROOT / "cli").rglob("*.py"))):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    offenders.append(f"{f.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert offenders == [], f"functions over {MAX_FUNCTION_LINES} lines: {offenders}"


def test_measurement_pointers_resolve():
    """Every ``docs/measurements.md, "name"`` pointer in stitch/ and cli/ names a ``## name`` section of that page."""
    sections = set(re.findall(r"^## (.+)$", (REPO_ROOT / "docs" / "measurements.md").read_text(), re.MULTILINE))
    pointers = {(str(f.relative_to(REPO_ROOT)), name)
                for f in list((REPO_ROOT / "stitch").rglob("*.py")) + list((REPO_ROOT / "cli").rglob("*.py"))
                for name in re.findall(r'docs/measurements\.md,\s*(?:#:\s*)?"([^"]+)"', f.read_text())}
    assert pointers and [p for p in sorted(pointers) if p[1] not in sections] == []
