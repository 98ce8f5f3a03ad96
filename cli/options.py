"""Click options shared by several commands, written once: --seed, --preset, --workers, --json, --quiet.

Choices and defaults come from the library's own constants, so ``--help`` never drifts from the code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from stitch.errors import ConfigError, StitchError
from stitch.homography.config import DEFAULT_PRESET, PRESET_CHOICES
from stitch.io import check_writable

F = TypeVar("F", bound=Callable[..., Any])

#: Upper bound of --workers (threads or processes).
MAX_WORKERS = 64


def seed_option(help: str = "Seed of every random step (a non-negative integer).") -> Callable[[F], F]:
    """``--seed N``: a non-negative integer, 0 by default."""
    return click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help=help)


def preset_option(default: str | None = DEFAULT_PRESET,
                  help: str = "Pairwise estimation preset.") -> Callable[[F], F]:
    """``--preset fast|accurate|exhaustive`` (stitch.homography.config.PRESET_CHOICES)."""
    return click.option("--preset", type=click.Choice(PRESET_CHOICES), default=default,
                        show_default=default is not None, help=help)


def workers_option(help: str = "Worker threads (0: the CPU count, at most 8); the result does not depend on it.",
                   default: int = 0) -> Callable[[F], F]:
    """``--workers N``: 0 means the library's automatic choice."""
    return click.option("--workers", type=click.IntRange(0, MAX_WORKERS), default=default, show_default=True,
                        help=help)


def _writable_json(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Refuse a --json path whose folder cannot be written, before any work."""
    if value is None or str(value) == "-":
        return value
    try:
        return check_writable(value)
    except StitchError as exc:
        raise click.BadParameter(str(exc)) from None


def json_option(help: str = "Write the JSON summary to this file ('-': standard output).") -> Callable[[F], F]:
    """``--json PATH``: a file written atomically, or '-' for standard output (the same in every command)."""
    return click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
                        default=None, callback=_writable_json, metavar="PATH|-", help=help)


def quiet_option(help: str = "No progress display or summary line; warnings still print.") -> Callable[[F], F]:
    """``-q/--quiet``."""
    return click.option("-q", "--quiet", is_flag=True, help=help)


def parse_value(raw: str) -> Any:
    """A command-line value as TOML reads it (``3``, ``0.5``, ``true``, ``"a b"``), else the text itself."""
    from stitch.deep.config import toml_module

    toml = toml_module()
    try:
        return toml.loads(f"v = {raw}")["v"]
    except toml.TOMLDecodeError:
        return raw


def key_values(items: tuple[str, ...], flag: str, example: str) -> dict[str, Any]:
    """``KEY=VALUE`` items of a repeatable ``flag`` as a dict (values by ``parse_value``); ConfigError names a bad
    item with ``example``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {example}")
        out[key.strip()] = parse_value(raw)
    return out
