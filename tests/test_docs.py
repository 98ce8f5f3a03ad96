"""The README and every page under docs/ say what runs.

* Every ```python block of a page runs as written, in order, in one namespace per page, in a folder holding the
  files the pages name (src.jpg, dst.jpg and H.txt: a sample pair and its true src -> dst matrix; a.jpg, b.jpg,
  c.jpg: the three sample panorama views).
* Every ``stitch ...`` line of a ```sh block names a real command, and only options that command has, with
  a valid value where the option takes a choice.
* Every ```toml block that is a batch set's ``stitch.toml`` holds only valid option names.
* Every relative link points at a file of the repository.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import click
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md")])
PAGE_IDS = [str(p.relative_to(REPO_ROOT)) for p in PAGES]
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.DOTALL)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
#: The guide pages, one per subject.
GUIDES = ("panoramas", "homography", "compare-reports", "batch", "learned-refiner", "development")


def python_blocks(page: Path) -> list[str]:
    """The page's python code blocks, in order."""
    return PYTHON_BLOCK.findall(page.read_text())


def stitch_lines(page: Path) -> list[str]:
    """The ``stitch ...`` command lines of the page's sh blocks (continuations joined, comments dropped)."""
    lines = []
    for block in SH_BLOCK.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and words[0] != "stitch":  # "ray job submit ... -- stitch batch ...", "... && stitch"
                words = words[1:]
            if words:
                lines.append(words)
    return lines


def check_command(words: list[str]) -> None:
    """AssertionError unless ``words`` (argv, "stitch" first) names a real command and only its options."""
    from stitch.cli.main import cli

    cmd, args = cli, words[1:]
    while isinstance(cmd, click.Group):
        assert args, f"{' '.join(words)}: no command"
        sub = cmd.get_command(click.Context(cmd), args[0])
        assert sub is not None, f"{' '.join(words)}: no command {args[0]!r}"
        cmd, args = sub, args[1:]
    opts = {name: p for p in cmd.params if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}
    opts.update({"--help": None, "-h": None})
    for k, word in enumerate(args):
        name = word.split("=", 1)[0]
        if not name.startswith("-") or name == "-":
            continue
        assert name in opts, f"{' '.join(words)}: {cmd.name} has no option {name}"
        param = opts[name]
        if param is not None and isinstance(param.type, click.Choice):
            value = word.split("=", 1)[1] if "=" in word else args[k + 1]
            assert value in param.type.choices, f"{' '.join(words)}: {name} {value!r} is not a choice"


def test_every_guide_exists_and_the_readme_is_short():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 150
    for guide in GUIDES:
        assert (REPO_ROOT / "docs" / f"{guide}.md").is_file(), guide
    assert len(list((REPO_ROOT / "docs" / "benchmarks").glob("*.md"))) >= 5


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_links_resolve(page):
    missing = [target for target in LINK.findall(page.read_text())
               if "://" not in target and not (page.parent / target).exists()]
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_stitch_command_lines_parse(page):
    for words in stitch_lines(page):
        check_command(words)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_stitch_toml_blocks_are_valid(page):
    import tomllib

    from stitch.panorama.options import stitch_options

    for block in TOML_BLOCK.findall(page.read_text()):
        if "stitch.toml" in block:
            options = stitch_options(tomllib.loads(block))  # ConfigError names a bad key
            assert options


def test_check_command_catches_a_bad_line():
    check_command(["stitch", "run", "photos/", "-o", "pano.jpg", "--crop", "rect"])
    for bad in (["stitch", "run", "photos/", "--bogus"], ["stitch", "run", "x/", "--crop", "weird"],
                ["stitch", "nope"], ["stitch", "bench", "nothing"]):
        with pytest.raises(AssertionError):
            check_command(bad)


def _scene(folder: Path, samples_dir: Path) -> None:
    """The files the pages name, copied from the sample data into ``folder``."""
    pair = samples_dir / "pairs" / "perspective"
    shutil.copy(next(pair.glob("src.*")), folder / "src.jpg")
    shutil.copy(next(pair.glob("dst.*")), folder / "dst.jpg")
    shutil.copy(pair / "H.txt", folder / "H.txt")
    for name, view in zip(("a.jpg", "b.jpg", "c.jpg"), sorted((samples_dir / "pano3").glob("view_*"))):
        shutil.copy(view, folder / name)


def _needs_deep(code: str) -> bool:
    return "stitch.deep" in code or 'refiner="deep"' in code


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)],
                         ids=[i for i, p in zip(PAGE_IDS, PAGES) if python_blocks(p)])
def test_python_blocks_run(page, tmp_path, monkeypatch, samples_dir):
    blocks = python_blocks(page)
    if any(_needs_deep(b) for b in blocks):
        from stitch.deep import DEFAULT_WEIGHTS, require_torch
        from stitch.errors import ConfigError

        try:
            require_torch()
        except ConfigError:
            pytest.skip("the deep extra (torch, kornia) is not installed")
        weights = re.search(r'deep_weights="([^"]+)"', "".join(blocks))
        if weights:  # the page's own-weights line points here
            (tmp_path / weights.group(1)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DEFAULT_WEIGHTS, tmp_path / weights.group(1))
    _scene(tmp_path, samples_dir)
    monkeypatch.chdir(tmp_path)
    name = str(page.relative_to(REPO_ROOT))
    ns: dict = {}
    for k, code in enumerate(blocks):  # a failure's traceback names "<page> python block k"
        exec(compile(code, f"{name} python block {k}", "exec"), ns)  # noqa: S102 - the page's own code
    # the blocks produced what they say: a homography, a panorama or a report
    produced = [v for v in ns.values() if any(hasattr(v, a) for a in ("H", "image", "rows"))]
    assert produced, f"{name}: its python blocks made no result"
