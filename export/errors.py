"""Export exceptions. `exit_code` follows DESIGN.md; the CLI prints the message and exits with it."""
from __future__ import annotations


class ExportError(Exception):
    """The model or an option cannot be exported (unconvertible op, unsupported option, bad file)."""

    exit_code = 2


class ParityError(Exception):
    """An exported file disagrees with the PyTorch model it came from beyond the tolerance."""

    exit_code = 1


class RuntimeMissing(Exception):
    """A converter or runtime is not installed; the message names the pip package."""

    exit_code = 3
