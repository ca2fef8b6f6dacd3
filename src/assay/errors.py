"""Exceptions raised by assay.

Every exception subclasses both :class:`AssayError` (catch everything assay raises) and the
builtin that describes its kind, so callers may catch either. Messages are one line: what
failed, where, what was expected, and how to fix it.
"""

from __future__ import annotations

import os


class AssayError(Exception):
    """Base class of every error raised by assay."""


class InputError(AssayError, ValueError):
    """An input file or argument is invalid (corrupt, non-binary, wrong dimensionality, ...)."""


class GeometryError(InputError):
    """Prediction and reference do not share a voxel grid (shape, spacing, origin, direction)."""


class SchemaError(AssayError, KeyError):
    """A structure or label name is not in the label schema."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class LayoutError(InputError):
    """A folder does not have a layout assay understands, or it is empty."""


class InputTypeError(AssayError, TypeError):
    """An argument has the wrong type or dtype (e.g. a mask that is not boolean)."""


class StoreError(AssayError, RuntimeError):
    """The results database cannot be opened, read or written (read-only file, locked,
    unreachable server, missing driver, full disk)."""


def os_error_message(exc: OSError) -> str:
    """One line for a file-system error: what could not be done, to which path, what to do."""
    import errno

    hints = {
        errno.EACCES: "check its permissions and those of its folders",
        errno.EPERM: "check its permissions and those of its folders",
        errno.ENOENT: "check the path",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder where a file was expected",
        errno.ENOSPC: "the disk is full; free some space",
        errno.EROFS: "it is on a read-only file system; choose another location",
        errno.ELOOP: "it is a loop of symbolic links",
        errno.ENAMETOOLONG: "the name is too long",
    }
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    shown = " -> ".join(os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in paths)
    what = exc.strerror or str(exc) or type(exc).__name__
    line = f"Cannot access {shown}: {what}" if shown else f"{type(exc).__name__}: {what}"
    hint = hints.get(exc.errno) if exc.errno is not None else None
    return f"{line}; {hint}." if hint else f"{line}."
