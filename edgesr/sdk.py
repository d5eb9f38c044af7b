"""Optional SDKs (export converters, runtimes, torchao): imported on use, or a one-line fix.

Training machines have none of the export SDKs; `import edgesr.<anything>` must work there. Code that
needs an SDK calls `import_sdk` inside the function that uses it, and a missing one becomes a
`MissingSDKError` whose message is the `pip install` that fixes it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgesr.errors import EdgesrError

__all__ = ["MissingSDKError", "import_sdk"]


class MissingSDKError(EdgesrError, ImportError, RuntimeError):
    """An SDK is not installed; the message is the exact `pip install` that fixes it.

    Also a RuntimeError so that callers handling "this cannot run here" errors catch it too.
    """


def import_sdk(target: str, label: str, extra: str, *modules: str) -> list[ModuleType]:
    """Import `modules` for `target`, or raise `MissingSDKError` naming the pip extra."""
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        raise MissingSDKError(
            f'target {target!r} needs the {label} SDK: pip install "edgesr[{extra}]"'
        ) from e
