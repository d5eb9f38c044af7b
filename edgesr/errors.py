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
    "ConfigError",
    "DataError",
    "DeviceError",
    "EdgesrError",
    "ExportError",
    "Interrupted",
    "NotFoundError",
    "NotRunnableHere",
    "OutputExistsError",
    "ProfileError",
    "RecipeError",
    "UnknownNameError",
    "UsageError",
]


class EdgesrError(Exception):
    """An error the user can fix; its message says how. `exit_code` is the CLI's exit status."""

    exit_code = 1


class Interrupted(EdgesrError):
    """A run stopped on the user's SIGINT/SIGTERM after saving what it had; the message says how to
    continue. Exit status 130, as for Ctrl-C."""

    exit_code = 130


class UsageError(EdgesrError, ValueError):
    """Command-line or API arguments that do not fit together (e.g. --threads without --artifact)."""


class UnknownNameError(EdgesrError, KeyError):
    """A name no registry holds (model, loss, target, ...); the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotFoundError(EdgesrError, FileNotFoundError):
    """A file or folder the user named does not exist (or lacks the companion file it needs)."""


class OutputExistsError(EdgesrError, FileExistsError):
    """An output exists and the command was not asked to replace it (--force)."""


class ConfigError(EdgesrError, ValueError):
    """A typed YAML file (recipe, device, profile) that does not validate. `key` is the dotted path it
    concerns ("" when none), `source` the file; the message names both."""

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        self.message, self.key, self.source = message, key, source
        super().__init__(f"{source}: {message}" if source else message)

    def with_source(self, source: str) -> ConfigError:
        return type(self)(self.message, key=self.key, source=source)


class RecipeError(ConfigError):
    """A recipe file or override that does not validate."""


class DataError(EdgesrError, ValueError):
    """An image or data set that cannot be read or used (missing, corrupt, too small, empty)."""


class CheckpointError(EdgesrError, ValueError):
    """A path that cannot be read as an edgesr checkpoint, or a width/state it does not hold."""


class DeviceError(ConfigError):
    """A device file (devices/*.yaml) that does not validate, or a device that cannot be used."""


class ProfileError(ConfigError):
    """A stored latency profile (devices/profiles/) that does not validate."""


class ExportError(EdgesrError, RuntimeError):
    """An export that cannot be made or did not verify; nothing was written."""


class NotRunnableHere(EdgesrError, RuntimeError):
    """A runtime that does not run on this machine (Core ML off macOS); says where it does."""
