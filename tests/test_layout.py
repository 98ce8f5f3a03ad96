"""The package layout: the packages pyproject installs, module borders, and a light ``import stitch``."""

from __future__ import annotations

import ast
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
    """``import stitch`` and its CLI's import load neither torch, kornia nor matplotlib."""
    code = ("import sys, stitch, stitch.cli.main; "
            "print(sorted(m for m in ('torch', 'kornia', 'matplotlib', 'scipy.optimize') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_names_resolve():
    import stitch

    for name in stitch.__all__:
        assert getattr(stitch, name) is not None, name
