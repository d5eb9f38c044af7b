"""Recipe files: load (with `a.b=value` overrides), resolve a shipped name, dump, save, hash, list.

r = load_recipe("recipes/quickstart.yaml", ["train.steps=200", "train.widths=[0.25, 0.5]"])
save_recipe(r, run_dir / "recipe.yaml")   # load_recipe(that file) == r
recipe_hash(r)                            # 16 hex chars, stored in checkpoints
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from edgesr import schema
from edgesr.files import atomic_write_text
from edgesr.recipe.config import RECIPES_DIR, Recipe
from edgesr.registry import unknown_name_message
from edgesr.schema import RecipeError, _found, _plain
from edgesr.yamlfile import (
    StrictLoader,
    _apply_override,
    _overridden,
    parse_override,
    read_yaml_file,
)

__all__ = [
    "dump_recipe", "from_dict", "list_recipes", "load_recipe", "recipe_hash", "recipe_to_dict", "replace",
    "resolve_recipe", "save_recipe",
]  # fmt: skip

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """edgesr.schema.from_dict for a Recipe or one of its sections (`path`: where `data` sits in the
    recipe); an unknown key's "did you mean" searches every key path of a Recipe."""
    return schema.from_dict(cls, data, path, root=Recipe)


# ---------------------------------------------------------------------------------------------
# Files.


def resolve_recipe(name_or_path: str | os.PathLike[str]) -> Path:
    """A recipe file path, or a shipped recipe's bare name (`quickstart` -> recipes/quickstart.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    looks_like_path = os.sep in text or "/" in text or path.suffix in (".yaml", ".yml")
    shipped = {name: p for name, p, _ in list_recipes()}
    if not looks_like_path and text in shipped:
        return shipped[text]
    if looks_like_path:
        raise RecipeError(f"no such recipe file: {text}. Shipped recipes: {', '.join(shipped)}")
    raise RecipeError(unknown_name_message("recipe", text, shipped))


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """Load, override and validate a recipe file (or shipped recipe name); RecipeError names the file."""
    file = resolve_recipe(path)
    source = str(path) if Path(path).is_file() else str(file)
    data = read_yaml_file(file, source)
    if data is None:
        raise RecipeError("empty recipe: expected a mapping with at least `name:`", source=source)
    if not isinstance(data, dict):
        raise RecipeError(f"expected a mapping at the top level, got {_found(data)}", source=source)
    parsed = []
    for text in overrides:
        key, value = parse_override(text)
        _apply_override(data, key, value, text, source)
        parsed.append((key, text))
    try:
        return from_dict(Recipe, data)
    except RecipeError as e:
        blamed = _overridden(e.key, parsed)
        if blamed is not None:
            raise e.with_source(f"override {blamed!r} (on {source})") from None
        if parsed:
            raise e.with_source(f"{source} with overrides {[t for _, t in parsed]}") from None
        raise e.with_source(source) from None


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain YAML/JSON-able types (tuples -> lists), in field order. An empty `export` section is left
    out, so recipes without one keep the hash they had before the section existed."""
    data = _plain(recipe)
    if recipe.export.empty:
        del data["export"]
    return data


def dump_recipe(recipe: Recipe) -> str:
    body = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None, width=100)
    return f"# edgesr resolved recipe {recipe.name!r}, hash {recipe_hash(recipe)}\n{body}"


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, dump_recipe(recipe))


def recipe_hash(recipe: Recipe) -> str:
    """First 16 hex digits of sha256 over the canonical JSON of `recipe_to_dict`, without the `export`
    section: how a student ships does not change its training, so writing one (`select-width
    --search --write`) leaves a trained run resumable and reusable."""
    data = recipe_to_dict(recipe)
    data.pop("export", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def replace(recipe: Recipe, key: str, value: Any) -> Recipe:
    """A copy of `recipe` with dotted `key` set to `value`, validated like a loaded recipe."""
    data = recipe_to_dict(recipe)
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise RecipeError(f"{'.'.join(parts[: i + 1])!r} is not a section", key=key)
        node = node[part]
    node[parts[-1]] = _plain(value)
    return from_dict(Recipe, data)


def list_recipes(root: str | os.PathLike[str] = RECIPES_DIR) -> list[tuple[str, Path, str]]:
    """(name, path, description) of every `*.yaml` under `root` and its folders (names are file stems,
    unique across folders); files are read, not validated."""
    out = []
    for path in sorted(Path(root).rglob("*.yaml"), key=lambda p: p.stem):
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)
            description = str(data.get("description", "")) if isinstance(data, dict) else ""
        except (OSError, yaml.YAMLError) as e:
            description = f"(unreadable: {type(e).__name__})"
        out.append((path.stem, path, description))
    return out
