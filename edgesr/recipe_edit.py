"""Editing a recipe file in place: change one value's characters, keep every other byte.

    write_recipe_width("recipes/quickstart_student.yaml", 0.375)  # `edgesr select-width --write`
    write_recipe_width(path, 0.5, export={"target": "tflite", "precision": "int8"})  # ... --search --write

The value is located with the YAML node's character positions (comments, layout, quoting and CRLF
line endings survive), the edited text is validated by loading it as a recipe before the file is
replaced, and the file is replaced atomically with its mode kept (edgesr.files).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from edgesr.files import atomic_write_text
from edgesr.recipe import load_recipe
from edgesr.recipe.export_cfg import ExportCfg
from edgesr.schema import RecipeError
from edgesr.yamlfile import StrictLoader

__all__ = ["export_flow", "write_recipe_width"]


def _child(node: Any, key: str) -> Any:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def export_flow(section: dict[str, Any]) -> str:
    """`{target: tflite, precision: int8}`: the section as one YAML flow mapping."""
    return yaml.safe_dump(section, default_flow_style=True, sort_keys=False, width=1000).strip()


def _set_export(text: str, root: Any, section: dict[str, Any]) -> str:
    """`text` with its top-level `export:` value replaced by `section` (appended when it has none)."""
    flow = export_flow(section)
    node = _child(root, "export")
    if node is None:
        eol = "\r\n" if "\r\n" in text else "\n"
        body = text if text.endswith(("\n", "\r")) or not text else text + eol
        return f"{body}export: {flow}  # how the student ships (edgesr select-width --search){eol}"
    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise RecipeError("export: expected a mapping such as `{target: onnx}`; fix or remove the key",
                          key="export")  # fmt: skip
    # a block mapping's own span runs on to the next key, over comments between: end at its last value
    start, end = node.start_mark.index, node.value[-1][1].end_mark.index
    return text[:start] + flow + text[end:]


def write_recipe_width(
    path: str | os.PathLike[str],
    width: float,
    out_path: str | os.PathLike[str] | None = None,
    export: dict[str, Any] | None = None,
) -> tuple[float, str]:
    """Set the recipe's student width to `width`, editing only that number's characters in the file.

    The student width is the single entry of `train.widths` (entries of `eval.widths` equal to it
    follow it, so the recipe stays valid). The edit is located with the YAML node's character
    positions, the result is validated by loading it as a recipe, then written atomically. Returns
    (old width, new text). Raises RecipeError when the file has no single-entry `train.widths`.
    `export`: also set the recipe's `export:` section to this mapping (replacing the one it has).
    `out_path`: write the edited recipe there instead (a copy; `path` is left as it was). A file that
    is not writable (mode 0444) is refused, not replaced: the atomic rename would ignore its mode.
    """
    path = Path(path)
    target = Path(out_path) if out_path is not None else path
    # the owner's write bit, not os.access: root may write anything, yet 0444 says "leave me alone"
    if target.exists() and (not os.access(target, os.W_OK) or not target.stat().st_mode & 0o200):
        raise RecipeError(
            f"{target} is read-only (mode {target.stat().st_mode & 0o777:o}); make it writable "
            "(chmod u+w) or write a copy (select-width --write NEW.yaml)",
            source=str(target),
        )
    with open(path, encoding="utf-8", newline="") as f:  # newline="": CRLF files stay CRLF
        text = f.read()
    root = yaml.compose(text, Loader=StrictLoader)
    widths = _child(_child(root, "train"), "widths")
    if not isinstance(widths, yaml.SequenceNode) or len(widths.value) != 1:
        raise RecipeError(
            "train.widths: expected a list with exactly one student width (e.g. `widths: [0.25]`) to "
            "replace; edit recipes that train several widths by hand",
            key="train.widths",
            source=str(path),
        )
    old = float(widths.value[0].value)
    new = f"{width:.6g}"
    nodes = [widths.value[0]]
    ev = _child(_child(root, "eval"), "widths")
    if isinstance(ev, yaml.SequenceNode):
        nodes += [n for n in ev.value if isinstance(n, yaml.ScalarNode) and _float(n.value) == old]
    out = text
    for n in sorted(nodes, key=lambda n: n.start_mark.index, reverse=True):
        out = out[: n.start_mark.index] + new + out[n.end_mark.index :]
    if export is not None:  # the width edit moved no node before `export:`'s end by more than digits
        out = _set_export(out, yaml.compose(out, Loader=StrictLoader), export)
    with tempfile.TemporaryDirectory() as tmp:  # validate before replacing the file
        check = Path(tmp) / path.name
        check.write_bytes(out.encode("utf-8"))
        recipe = load_recipe(check)
    if recipe.train.widths != (float(new),):
        raise RecipeError(
            f"train.widths: edit produced {list(recipe.train.widths)}, expected [{new}]", source=str(path)
        )
    if export is not None and recipe.export != ExportCfg(**export):
        raise RecipeError(f"export: edit produced {recipe.export}, expected {export}", source=str(path))
    atomic_write_text(target, out)
    return old, out


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
