"""The errors edgesr raises for a user to act on, one base class and one subclass per area.

`edgesr` (the CLI) prints an `EdgesrError` as one line: the message already names the file, key or
value, what was expected and what to do. Anything else that escapes a command is a bug in edgesr:
the CLI prints its traceback and asks for a report.

Each area's error also derives from the built-in exception that callers caught before this
hierarchy existed (`ValueError` for bad input, `RuntimeError` for "cannot run here",
`FileExistsError` for refusing to overwrite), so `except ValueError` keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DataError",
    "DeviceError",
    "EdgesrError",
    "ExportError",
    "NotRunnableHere",
    "OutputExistsError",
    "ProfileError",
    "RecipeError",
    "UnknownNameError",
    "UsageError",
]


class EdgesrError(Exception):
    """An error the user can fix; its message says how."""


class UsageError(EdgesrError, ValueError):
    """Command-line or API arguments that do not fit together (e.g. --threads without --artifact)."""


class UnknownNameError(EdgesrError, KeyError):
    """A name no registry holds (model, loss, target, ...); the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutputExistsError(EdgesrError, FileExistsError):
    """An output exists and the command was not asked to replace it (--force)."""


class RecipeError(EdgesrError, ValueError):
    """A recipe file or override that does not validate; names the file and the key's dotted path."""


class DataError(EdgesrError, ValueError):
    """An image or data set that cannot be read or used (missing, corrupt, too small, empty)."""


class CheckpointError(EdgesrError, ValueError):
    """A path that cannot be read as an edgesr checkpoint, or a width/state it does not hold."""


class DeviceError(EdgesrError, ValueError):
    """A device file (devices/*.yaml) that does not validate, or a device that cannot be used."""


class ProfileError(EdgesrError, ValueError):
    """A latency profile or profiler output that cannot be read or trusted."""


class ExportError(EdgesrError, RuntimeError):
    """An export that cannot be made or did not verify; nothing was written."""


class NotRunnableHere(EdgesrError, RuntimeError):
    """A runtime that does not run on this machine (Core ML off macOS); says where it does."""
