"""Exception types. Every error the library raises on bad input derives from StitchError."""

from __future__ import annotations

#: The distribution's name on the package index (``stitch`` there is an unrelated project). The import package
#: and the command stay ``stitch``.
DISTRIBUTION = "stitch-toolkit"


def install_hint(extra: str) -> str:
    """The pip command that installs one optional extra, e.g. ``pip install 'stitch-toolkit[ray]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


class StitchError(Exception):
    """Base class: a one-line, user-facing message naming the offending file or value."""


class ImageReadError(StitchError):
    """An input image is missing, empty, corrupt or not an image."""


class ImageTooSmallError(ImageReadError):
    """An input image reads, but is smaller than a stage accepts."""


class NoOverlapError(StitchError):
    """Two images (or a whole set) share no reliable overlap."""


class EstimationError(StitchError):
    """No plausible homography could be estimated."""


class ConfigError(StitchError, ValueError):
    """An option has an invalid value; the message names the option."""


class CanvasTooLargeError(StitchError):
    """The warped canvas would exceed the configured size cap (a sign of a bad matrix)."""


def check_choice(option: str, value: object, choices: tuple) -> None:
    """ConfigError naming ``option`` unless ``value`` is one of ``choices`` (a table's names)."""
    if value not in choices:
        raise ConfigError(f"{option}={value!r}: choose one of {', '.join(map(str, choices))}")


def one_line(text: object) -> str:
    """A message as one line: whitespace and newlines collapsed (every error and warning the user sees)."""
    return " ".join(str(text).split())
