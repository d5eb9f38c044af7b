"""Strict YAML for edgesr's typed files (recipes, devices, profiles) and `a.b=value` overrides.

Safe loading only; a duplicated key is an error, not a silent overwrite; an override's value is
parsed as a YAML scalar or flow collection, never evaluated. Errors are the schema's ConfigError
classes (edgesr.schema), naming the file and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from edgesr.schema import _error, _found

__all__ = ["DuplicateKeyError", "StrictLoader", "parse_override", "read_yaml_file", "yaml_load"]


# ---------------------------------------------------------------------------------------------
# YAML.


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line
        super().__init__(f"duplicate key {key!r} on line {line} (first on line {first_line})")


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects duplicate keys and aliases and reads `1e-4` as a float (YAML 1.2).

    Plain PyYAML keeps the last of two equal keys silently and, following YAML 1.1, reads `1e-4`
    and `5e-4` as strings: both would reach the trainer as surprises. Aliases (`*name`, also in
    `<<: *name` merges) are refused: a 444-byte file of nested aliases ("billion laughs") expands
    to gigabytes, and no edgesr file needs them.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None,
                f"YAML aliases (*{event.anchor}) are not allowed in edgesr files; write the value out",
                event.start_mark,
            )  # fmt: skip
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(key, line, seen[key])
                seen[key] = line
            except TypeError:  # unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml_file(path: str | os.PathLike[str], source: str) -> Any:
    """`yaml_load` of a file: a file that is not UTF-8 text (a binary, a UTF-16 export) is a
    ConfigError naming it, not a UnicodeDecodeError."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise _error(
            f"not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); expected a YAML file",
            source=source,
        ) from None
    except OSError as e:
        raise _error(f"cannot read: {e.strerror}", source=source) from None
    return yaml_load(text, source)


def yaml_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader
    except DuplicateKeyError as e:
        raise _error(str(e), source=source) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise _error(f"invalid YAML: {_one_line(e.problem or e.context)}{where}", source=source) from None
    except yaml.reader.ReaderError as e:  # a control character: a binary file, most likely
        raise _error(
            f"invalid YAML: character {e.character!r} at position {e.position} is not allowed "
            "(a binary file?)",
            source=source,
        ) from None
    except yaml.YAMLError as e:
        raise _error(f"invalid YAML: {_one_line(str(e))}", source=source) from None


def _one_line(text: str | None) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------
# Overrides.

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_override(text: str) -> tuple[str, Any]:
    """`"train.widths=[0.25, 0.5]"` -> `("train.widths", (0.25, 0.5) as a list)`; the value is YAML."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    source = f"override {text!r}"
    if not eq:
        raise _error("expected KEY=VALUE, e.g. train.steps=200", source=source)
    if not _KEY.fullmatch(key):
        raise _error(f"bad key {key!r}: expected dotted names like train.optim.lr", source=source)
    return key, yaml_load(raw, source)


def _apply_override(data: dict[str, Any], key: str, value: Any, text: str, source: str) -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:  # `train:` with nothing under it
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise _error(
                f"{where!r} is {_found(child)}, not a section",
                key=where,
                source=f"override {text!r} (on {source})",
            )
        node = child
    node[parts[-1]] = value


def _overridden(key: str, overrides: Sequence[tuple[str, str]]) -> str | None:
    for okey, text in overrides:
        if (
            key == okey
            or key.startswith(okey + ".")
            or key.startswith(okey + "[")
            or okey.startswith(key + ".")
        ):
            return text
    return None
