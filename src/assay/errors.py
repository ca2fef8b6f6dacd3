"""Exceptions raised by assay.

Every exception subclasses both :class:`AssayError` (catch everything assay raises) and the
builtin that describes its kind, so callers may catch either. Messages are one line: what
failed, where, what was expected, and how to fix it.
"""

from __future__ import annotations


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
