"""Recipes: the typed schema (config.py) and recipe files (load.py). See config.py's docstring."""

from edgesr.recipe.config import (
    QUANT_BACKENDS,
    RECIPES_DIR,
    VGG_LAYERS,
    CSDCfg,
    DataCfg,
    EvalCfg,
    LossCfg,
    ModelCfg,
    OptimCfg,
    QuantCfg,
    Recipe,
    RecipeError,
    RecipeLoader,
    TrainCfg,
    qat_losses,
    signature_for,
)
from edgesr.recipe.load import (
    dump_recipe,
    from_dict,
    list_recipes,
    load_recipe,
    recipe_hash,
    recipe_to_dict,
    replace,
    resolve_recipe,
    save_recipe,
)
from edgesr.yamlfile import parse_override

__all__ = [
    "QUANT_BACKENDS", "RECIPES_DIR", "VGG_LAYERS", "CSDCfg", "DataCfg", "EvalCfg", "LossCfg", "ModelCfg",
    "OptimCfg", "QuantCfg", "Recipe", "RecipeError", "RecipeLoader", "TrainCfg", "dump_recipe", "from_dict",
    "list_recipes", "load_recipe", "parse_override", "qat_losses", "recipe_hash", "recipe_to_dict", "replace",
    "resolve_recipe", "save_recipe", "signature_for",
]  # fmt: skip
