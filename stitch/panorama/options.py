"""The panorama options as users name them and how each becomes a stitch_images option: one mapping, read by
`stitch run` and `stitch batch` (their flags), a batch set's ``stitch.toml`` (its keys) and the CLI's wording
of library messages.

Every stitch_images option (stitch.panorama.config.STITCH_OPTION_NAMES, derived from the config dataclasses)
is a user option of the same name, written with '_' or '-' (``wave_correct``, ``--wave-correct``). ``RENAMED``
holds the user options that set another option in other terms: ``max_canvas_mp`` (megapixels) sets
``max_canvas_pixels``, the flag ``no_crop`` sets ``crop = 'none'``. Adding an option is one edit: a config
field (and, for the command line, its click option in stitch.cli.panorama_options).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stitch.errors import ConfigError
from stitch.panorama.config import STITCH_OPTION_NAMES


@dataclass(frozen=True)
class Renamed:
    """A user option that sets stitch_images option ``target`` to ``convert(value)`` (None: leaves it unset);
    ``wording`` writes a ``target`` value, as a message prints it, in the user option's terms ('' for a flag)."""

    target: str
    convert: Callable[[Any], Any]
    wording: Callable[[str], str]


def megapixels_to_pixels(value: Any) -> int:
    """A canvas cap in megapixels (> 0) as a pixel count (at least 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"max_canvas_mp={value!r}: must be a positive number of megapixels")
    return max(1, int(value * 1e6))


def pixels_as_megapixels(text: str) -> str:
    """A pixel count as megapixels, e.g. '1000' -> '0.001' (other text unchanged)."""
    try:
        return f"{float(text) / 1e6:g}"
    except ValueError:
        return text


#: User option -> the stitch_images option it sets, in other terms; every other user option is its own.
RENAMED: dict[str, Renamed] = {
    "max_canvas_mp": Renamed("max_canvas_pixels", megapixels_to_pixels, pixels_as_megapixels),
    "no_crop": Renamed("crop", lambda flag: "none" if flag else None, lambda _text: ""),
}
#: Every name a user may give: the stitch_images options and the RENAMED ones.
USER_OPTION_NAMES = STITCH_OPTION_NAMES + tuple(RENAMED)


def unknown_option(name: str, valid: tuple[str, ...] = USER_OPTION_NAMES) -> ConfigError:
    """The error for an unknown option: its name, the nearest valid one, and the valid ones."""
    near = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ConfigError(f"unknown option {name!r}{hint}; valid: {', '.join(valid)}")


def stitch_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """stitch_images options from user options (None: not given, the library default stands).

    ConfigError names an unknown option (with the valid ones) or two options that set one option differently.
    """
    out: dict[str, Any] = {}
    given: dict[str, tuple[str, Any]] = {}  # target -> the user option (and value) that set it
    for raw, value in values.items():
        name = raw.replace("-", "_")
        if value is None:
            continue
        if name in RENAMED:
            target, converted = RENAMED[name].target, RENAMED[name].convert(value)
            if converted is None:
                continue
        elif name in STITCH_OPTION_NAMES:
            target, converted = name, value
        else:
            raise unknown_option(raw)
        if target in out and out[target] != converted:
            first, first_value = given[target]
            raise ConfigError(f"{name}={value!r} contradicts {first}={first_value!r}")
        out[target], given[target] = converted, (name, value)
    return out
