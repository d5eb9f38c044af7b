"""Typed dataclass trees from YAML mappings: the recipe-agnostic machinery behind edgesr.recipe.

`from_dict(cls, data)` walks a frozen dataclass's fields with their type hints: unknown keys and wrong
types raise `RecipeError` naming the dotted key path, what was found and what was expected (with a
"did you mean" for near-miss keys). While a section is constructed its path is published, so the
`_check`/`_fail` helpers its `__post_init__` calls can name `train.optim.lr` rather than just `lr`.

The YAML side (`StrictLoader`, which rejects duplicate keys and reads `1e-4` as a float, and
`a.b=value` overrides, parsed as YAML, never evaluated) is edgesr.yamlfile.

    from_dict(Recipe, {"name": "x", "train": {"steps": 0}})
    # RecipeError: train.steps: must be > 0, got 0
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import functools
import inspect
import operator
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from edgesr.errors import ConfigError, RecipeError

__all__ = ["ConfigError", "RecipeError", "check_kwargs", "config_errors", "from_dict"]

T = TypeVar("T")


# Which ConfigError subclass the machinery raises: RecipeError unless a loader of another kind of file
# (device, profile) says otherwise with `config_errors(DeviceError)`.
_ERROR: contextvars.ContextVar[type[ConfigError]] = contextvars.ContextVar(
    "edgesr_schema_error", default=RecipeError
)


@contextlib.contextmanager
def config_errors(error: type[ConfigError]) -> Iterator[None]:
    """Within the block, schema errors are raised as `error` (e.g. DeviceError for device files)."""
    token = _ERROR.set(error)
    try:
        yield
    finally:
        _ERROR.reset(token)


def _error(message: str, *, key: str = "", source: str = "") -> ConfigError:
    return _ERROR.get()(message, key=key, source=source)


# ---------------------------------------------------------------------------------------------
# Semantic checks report full dotted paths: `from_dict` publishes the section's path here while it
# constructs the section, so `__post_init__` can name `train.optim.lr` rather than just `lr`.
_SECTION = contextvars.ContextVar("edgesr_schema_section", default="")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def _fail(key: str, problem: str) -> ConfigError:
    full = _join(_SECTION.get(), key)
    return _error(f"{full}: {problem}", key=full)


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise _fail(key, problem)


def _unknown_key(key: str, known: Sequence[str], schema_paths: Sequence[str] = ()) -> ConfigError:
    """'unknown key a.b' with the closest sibling, or the same leaf name in another section."""
    prefix, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, known, n=1)
    if close:
        hint = f" Did you mean {_join(prefix, close[0])!r}?"
    else:
        elsewhere = [p for p in schema_paths if p.rpartition(".")[2] == leaf]
        hint = f" Did you mean {elsewhere[0]!r}?" if elsewhere else ""
    return _error(f"unknown key {key!r}.{hint} Valid here: {', '.join(known)}", key=key)


# ---------------------------------------------------------------------------------------------
# Generic dict -> dataclass conversion.


class _Unsupported(Exception):
    """A type hint `_coerce` cannot check (edgesr.recipe lets such model arguments through)."""


_NONE = type(None)
_YAML_TYPE_NAMES = {dict: "mapping", list: "list", tuple: "list", _NONE: "null"}


def _found(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_YAML_TYPE_NAMES.get(type(value), type(value).__name__)} {text}"


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is _NONE else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_describe(args[0])}"
        return f"list of {len(args)} [{', '.join(_describe(a) for a in args)}]"
    if origin is dict:
        return "mapping"
    if tp is bool:
        return "bool (true/false)"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str, root: type | None = None) -> Any:
    """Check `value` against type hint `tp`; return it normalised (lists -> tuples, int -> float).

    `root` is passed on to `from_dict` for nested dataclasses.
    """

    def wrong() -> ConfigError:
        return _error(f"{key}: expected {_describe(tp)}, got {_found(value)}", key=key)

    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise wrong()
        return from_dict(tp, value, key, root=root)
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f". Did you mean {close[0]!r}?" if close else ""
            raise _error(f"{key}: expected {_describe(tp)}, got {_found(value)}{hint}", key=key)
        return value
    if origin in (Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        errors = []
        for a in args:
            if a is _NONE:
                continue
            try:
                return _coerce(a, value, key, root)
            except ConfigError as e:
                errors.append(e)
        deeper = [e for e in errors if e.key != key]  # e.g. a bad list element: the precise message
        raise deeper[0] if len(errors) == 1 and deeper else wrong()
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise wrong()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]", root) for i, v in enumerate(value))
        if len(value) != len(args):
            raise wrong()
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, f"{key}[{i}]", root) for i, (a, v) in pairs)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise wrong()
        for k in value:
            if not isinstance(k, str):
                raise _error(f"{key}: keys must be strings, got {_found(k)}", key=key)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    raise _Unsupported(f"{key}: cannot check values of type {tp!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _schema_paths(cls: type, prefix: str = "") -> Iterator[str]:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        yield path
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _schema_paths(hints[f.name], path)


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "", *, root: type | None = None) -> T:
    """Build dataclass `cls` from a plain mapping, checking every key and type against its hints.

    `path` is the dotted location of `data` in the whole tree, used in error messages. `root` is the
    tree's top-level class (default `cls`): an unknown key's "did you mean" searches its key paths.
    """
    root = root or cls
    if not isinstance(data, Mapping):
        raise _error(f"{path or 'recipe'}: expected mapping, got {_found(data)}", key=path)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for k in data:
        if not isinstance(k, str):
            raise _error(f"{path or 'recipe'}: keys must be strings, got {_found(k)}", key=path)
        if k not in fields:
            raise _unknown_key(_join(path, k), list(fields), list(_schema_paths(root)))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key, root)
        elif dataclasses.is_dataclass(hints[name]):  # build defaults here so their errors have paths
            kwargs[name] = from_dict(hints[name], {}, key, root=root)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _error(f"missing required key {key!r}", key=key)
    token = _SECTION.set(path)
    try:
        return cls(**kwargs)
    finally:
        _SECTION.reset(token)


def _plain(value: Any) -> Any:
    """The inverse of `from_dict`: dataclasses -> dicts, tuples -> lists, in field order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


_ANNOTATION_NAMES: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str, "None": None}


@dataclasses.dataclass(frozen=True)
class AtLeast:
    """A lower bound on a constructor argument (`n_feats: Annotated[int, AtLeast(1)]`), checked
    wherever the arguments are: `recipes validate`, `load_recipe`, `build_model`."""

    min: int | float


Count = Annotated[int, AtLeast(1)]  # channels, blocks, groups, multiples: at least one


def bound_errors(sig: inspect.Signature, args: Mapping[str, Any]) -> dict[str, str]:
    """Argument name -> what is wrong, for the arguments below their `AtLeast` bound."""
    wrong: dict[str, str] = {}
    for name, value in args.items():
        param = sig.parameters.get(name)
        for bound in getattr(param and param.annotation, "__metadata__", ()):
            if isinstance(bound, AtLeast) and isinstance(value, int | float) and value < bound.min:
                wrong[name] = f"must be at least {bound.min}, got {value}"
    return wrong


def _arg_type(annotation: Any) -> Any:
    """The type to check an argument against, or Any when it cannot be known statically."""
    if annotation is inspect.Parameter.empty:
        return Any
    if get_origin(annotation) is Annotated:
        return _arg_type(get_args(annotation)[0])
    if isinstance(annotation, str):  # a module using `from __future__ import annotations`
        parts = [p.strip() for p in annotation.split("|")]
        if not all(p in _ANNOTATION_NAMES for p in parts):
            return Any
        kinds = [type(None) if _ANNOTATION_NAMES[p] is None else _ANNOTATION_NAMES[p] for p in parts]
        return functools.reduce(operator.or_, kinds)  # int | None, as a real types.UnionType
    return annotation


def check_kwargs(
    owner: str, sig: inspect.Signature, args: Mapping[str, Any], reserved: Mapping[str, str]
) -> dict[str, Any]:
    """Keyword arguments for a callable, checked against its signature (names and annotated types).

    `reserved` names are set elsewhere (key -> message saying where). Errors use the `args.<name>`
    path under the current section.
    """
    if not isinstance(args, Mapping):
        raise _fail("args", f"expected mapping, got {_found(args)}")
    params = {
        n: p
        for n, p in sig.parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    open_ended = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    out: dict[str, Any] = {}
    for name, value in args.items():
        key = _join(_SECTION.get(), f"args.{name}")
        if name in reserved:
            raise _fail(f"args.{name}", reserved[name])
        if name not in params:
            if open_ended:
                out[name] = value
                continue
            raise _unknown_key(key, [n for n in params if n not in reserved])
        try:
            out[name] = _coerce(_arg_type(params[name].annotation), value, key)
        except _Unsupported:
            out[name] = value
    for name, problem in bound_errors(sig, out).items():
        raise _fail(f"args.{name}", problem)
    missing = [n for n, p in params.items() if p.default is p.empty and n not in out and n not in reserved]
    _check(not missing, "args", f"{owner} needs {', '.join(missing)} (no default)")
    return out
