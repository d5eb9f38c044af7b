"""Recipes: every shipped file validates; every mistake is an error naming the file and key path."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import edgesr.recipe as recipe_mod
from edgesr.models import MODELS
from edgesr.recipe import (
    RECIPES_DIR,
    Recipe,
    RecipeError,
    dump_recipe,
    list_recipes,
    load_recipe,
    parse_override,
    recipe_hash,
    recipe_to_dict,
    replace,
    resolve_recipe,
    save_recipe,
)

SHIPPED = sorted(RECIPES_DIR.rglob("*.yaml"), key=lambda p: p.stem)

MINIMAL = """\
name: tiny
scale: 2
model:
  name: edsr
  args: {n_resblocks: 2, n_feats: 16}
train:
  steps: 10
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return str(info.value)


# --- shipped recipes -----------------------------------------------------------------------------


def test_recipes_are_shipped() -> None:
    assert {"quickstart", "csd_edsr_x4_w025", "student_slice_x4_w025"} <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipe_validates_and_round_trips(path: Path) -> None:
    r = load_recipe(path)
    assert r.name == path.stem  # `resolve_recipe(name)` finds it by file name
    assert r.description
    assert load_recipe(path.stem) == r
    assert recipe_mod.from_dict(Recipe, recipe_to_dict(r)) == r


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipe_header_gives_its_command(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert header, f"{path.name} has no comment header"
    relative = path.relative_to(RECIPES_DIR).as_posix()
    assert any(f"edgesr train recipes/{relative}" in line for line in header)


def test_csd_paper_recipe_matches_the_paper_protocol() -> None:
    r = load_recipe("csd_edsr_x4_w025")
    assert (r.scale, r.train.mode, r.train.widths) == (4, "csd", (0.25,))
    assert r.model.args == {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}
    assert (r.train.csd.lambda_teacher, r.train.csd.lambda_cl, r.train.csd.negatives) == (1.0, 200.0, 10)
    assert r.train.csd.layer_weights == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    assert (r.data.patch_size, r.data.batch_size) == (48, 16)
    assert (r.train.optim.lr, r.train.optim.milestones, r.train.optim.gamma) == (1e-4, (200000,), 0.1)
    assert r.train.steps == 400000 and r.eval.self_ensemble


@pytest.mark.parametrize("name", ["csd_edsr_x4_w025", "csd_edsr_x2_w025", "student_slice_x4_w025"])
def test_paper_recipes_start_from_the_zoo_teacher_of_their_architecture(name: str) -> None:
    from edgesr.models.zoo import lookup

    r = load_recipe(name)
    teacher = lookup(r.train.init)  # a zoo name: the recipe runs on a fresh machine after data fetch
    assert teacher.name == f"edsr_x{r.scale}" and dict(teacher.args) == {"scale": r.scale, **r.model.args}
    assert (r.data.train, r.data.val) == ("div2k", ("set5", "set14", "b100", "urban100"))


def test_default_vgg_layers_match_the_embedding() -> None:
    vgg = pytest.importorskip("edgesr.losses.vgg")
    assert set(recipe_mod.VGG_LAYERS) == set(vgg.TAPS)


def test_list_and_resolve() -> None:
    listed = list_recipes()
    assert [name for name, _, _ in listed] == [p.stem for p in SHIPPED]
    assert all(desc for _, _, desc in listed)
    assert resolve_recipe("quickstart") == RECIPES_DIR / "quickstart.yaml"
    with pytest.raises(RecipeError, match="unknown recipe 'quikstart'. Did you mean 'quickstart'"):
        resolve_recipe("quikstart")
    with pytest.raises(RecipeError, match="no such recipe file"):
        resolve_recipe("nowhere/x.yaml")


# --- schema errors ---------------------------------------------------------------------------------


def test_minimal_recipe_fills_defaults(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, MINIMAL))
    assert r.train.optim == recipe_mod.OptimCfg()
    assert r.data == recipe_mod.DataCfg()
    assert r.model.args == {"n_resblocks": 2, "n_feats": 16}
    assert r.eval_widths == (0.25,)


def test_typo_key_names_file_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("steps: 10", "stpes: 10"), "x.yaml")
    msg = error_of(path)
    assert msg.startswith(f"{path}: unknown key 'train.stpes'. Did you mean 'train.steps'?")


def test_key_in_wrong_section_points_to_the_right_one(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, MINIMAL + "patch_size: 32\n"))
    assert "unknown key 'patch_size'. Did you mean 'data.patch_size'?" in msg


def test_missing_name(tmp_path: Path) -> None:
    assert "missing required key 'name'" in error_of(write(tmp_path, "scale: 2\n"))


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("  steps: ten", "train.steps: expected int, got str 'ten'"),
        ("  steps: true", "train.steps: expected int, got bool True"),
        ("  steps: 10.0", "train.steps: expected int, got float 10.0"),
        ("  widths: 0.25", "train.widths: expected list of float, got float 0.25"),
        ("  widths: [0.25, half]", "train.widths[1]: expected float, got str 'half'"),
        ("  compile: 1", "train.compile: expected bool (true/false), got int 1"),
        ("  init: 3", "train.init: expected str or null, got int 3"),
        ("  mode: cds", "train.mode: expected one of 'csd', 'single', 'distill', 'qat', got str 'cds'"),
        ("  optim: {betas: [0.9]}", "train.optim.betas: expected list of 2 [float, float], got list [0.9]"),
        ("  csd: [1]", "train.csd: expected mapping, got list [1]"),
    ],
)
def test_wrong_type_names_path_and_expected_type(tmp_path: Path, line: str, needle: str) -> None:
    path = write(tmp_path, MINIMAL.replace("  steps: 10", line))
    msg = error_of(path)
    assert msg.startswith(f"{path}: ") and needle in msg


def test_ints_become_floats(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, MINIMAL + "  optim: {lr: 1, betas: [0, 0.99]}\n"))
    assert r.train.optim.lr == 1.0 and isinstance(r.train.optim.lr, float)
    assert r.train.optim.betas == (0.0, 0.99) and isinstance(r.train.optim.betas[0], float)


def test_exponent_floats_without_a_dot_are_floats(tmp_path: Path) -> None:
    # Plain YAML 1.1 (yaml.safe_load) reads `1e-4` as the string "1e-4".
    r = load_recipe(write(tmp_path, MINIMAL + "  optim: {lr: 1e-4, weight_decay: 5E-5}\n"))
    assert (r.train.optim.lr, r.train.optim.weight_decay) == (1e-4, 5e-5)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["scale=5"], "scale: must be 2, 3 or 4, got 5"),
        (["train.widths=[0.25, 1.5]"], "train.widths[1]: width must be in (0, 1], got 1.5"),
        (["train.widths=[1.0]"], "train.widths: csd student widths must be < 1"),
        (["train.widths=[]"], "train.widths: must list at least one width"),
        (["train.mode=single", "train.widths=[0.25, 0.5]"], "single mode trains exactly one width"),
        (["train.checkpoint_every=0"], "train.checkpoint_every: must be > 0, got 0"),
        (["train.csd.layer_weights=[1.0]"], "train.csd.layer_weights: has 1 entries but layers has 5"),
        (
            ["train.csd.layers=[relu1_1, relu2_2]", "train.csd.layer_weights=[1, 1]"],
            "train.csd.layers[1]: unknown VGG19 layer 'relu2_2'",
        ),
        (["train.optim.milestones=[200, 100]"], "train.optim.milestones: must be positive and strictly"),
        (["data.patch_size=4"], "data.patch_size: must be >= 8"),
        (["eval.widths=[0.5]"], "eval.widths[0]: width 0.5 is not trained by this recipe"),
        (["name=a/b"], "name: must be a file-name-safe word"),
        (["train.losses=[{name: output_kd}]"], "train.losses[0].name: csd mode adds losses that read only"),
        (["train.mode=single", "train.losses=[{name: l1}]"], "single mode already trains with L1 to HR"),
    ],
)
def test_semantic_checks(tmp_path: Path, overrides: list[str], needle: str) -> None:
    msg = error_of(write(tmp_path, MINIMAL), tuple(overrides))
    assert needle in msg


def test_semantic_checks_also_apply_to_recipes_built_in_python() -> None:
    with pytest.raises(RecipeError, match="scale: must be 2, 3 or 4"):
        Recipe(name="x", scale=8)
    with pytest.raises(RecipeError, match="widths: single mode trains exactly one width"):
        recipe_mod.TrainCfg(mode="single", widths=(0.25, 0.5))


# --- model arguments -------------------------------------------------------------------------------


def test_unknown_model_lists_valid_names(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, MINIMAL.replace("name: edsr", "name: edsrr")))
    assert "model.name: unknown model 'edsrr'. Did you mean 'edsr'?" in msg
    assert f"Valid: {', '.join(MODELS.names())}" in msg


def test_bad_model_arg_suggests_the_right_one(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, MINIMAL.replace("n_feats: 16", "n_feat: 16")))
    assert "unknown key 'model.args.n_feat'. Did you mean 'model.args.n_feats'?" in msg


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ("{n_feats: 16.5}", "model.args.n_feats: expected int, got float 16.5"),
        ("{n_feats: true}", "model.args.n_feats: expected int, got bool True"),
        ("{scale: 2}", "model.args.scale: do not set it here: the scale comes from the recipe"),
        ("{width_multiple: 4}", "model.args.width_multiple: do not set it here"),
        ("[1, 2]", "model.args: expected mapping, got list [1, 2]"),
    ],
)
def test_bad_model_args(tmp_path: Path, args: str, needle: str) -> None:
    msg = error_of(write(tmp_path, MINIMAL.replace("{n_resblocks: 2, n_feats: 16}", args)))
    assert needle in msg


def test_model_float_args_are_normalised(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, MINIMAL.replace("n_feats: 16}", "n_feats: 16, res_scale: 1}")))
    assert r.model.args["res_scale"] == 1.0 and isinstance(r.model.args["res_scale"], float)
    assert recipe_hash(r) == recipe_hash(replace(r, "model.args.res_scale", 1.0))


def _param(name: str, annotation: object = inspect.Parameter.empty, **kw: object) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, **kw)


FAKE_MODELS = {
    # string annotations, as a model module with `from __future__ import annotations` reports them
    "net": inspect.Signature(
        [
            _param("scale", "int", default=4),
            _param("depth", "int", default=4),
            _param("feats", "int | None", default=None),
            _param("gain", "float", default=1.0),
        ]
    ),
    "needy": inspect.Signature([_param("scale"), _param("depth", int)]),
    "open": inspect.Signature(
        [_param("scale", int, default=4), inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    ),
}


def fake_signatures(name: str) -> inspect.Signature:
    if name not in FAKE_MODELS:
        raise KeyError(recipe_mod.config.unknown_name_message("model", name, FAKE_MODELS))
    return FAKE_MODELS[name]


def test_signature_provider_is_injectable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipe_mod.config, "signature_for", fake_signatures)
    cfg = recipe_mod.ModelCfg(name="net", args={"depth": 2, "feats": None, "gain": 2})
    assert cfg.args == {"depth": 2, "feats": None, "gain": 2.0}
    with pytest.raises(RecipeError, match=r"args.feats: expected int or null, got str 'x'"):
        recipe_mod.ModelCfg(name="net", args={"feats": "x"})
    with pytest.raises(RecipeError, match="model 'needy' needs depth"):
        recipe_mod.ModelCfg(name="needy")
    assert recipe_mod.ModelCfg(name="open", args={"anything": [1]}).args == {"anything": [1]}
    with pytest.raises(RecipeError, match="unknown model 'edsr'. Valid: needy, net, open"):
        recipe_mod.ModelCfg()


# --- overrides -------------------------------------------------------------------------------------


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    r = load_recipe(
        write(tmp_path, MINIMAL.replace("steps: 10", "steps: 10\n  init: teacher.safetensors")),
        [
            "train.steps=200",
            "train.optim.lr=2e-4",
            "train.widths=[0.25,0.5]",
            "train.init=null",
            "eval.self_ensemble=true",
            "data.cache_dir=/tmp/cache",
            "model.args.n_feats=24",
        ],
    )
    assert r.train.steps == 200 and r.train.optim.lr == 2e-4
    assert r.train.widths == (0.25, 0.5) and r.train.init is None
    assert r.eval.self_ensemble and r.data.cache_dir == "/tmp/cache" and r.model.args["n_feats"] == 24


def test_overrides_are_never_evaluated(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, MINIMAL), ["description=__import__('os').getcwd()"])
    assert r.description == "__import__('os').getcwd()"
    assert parse_override("name=__import__('os')") == ("name", "__import__('os')")
    with pytest.raises(RecipeError, match="name: must be a file-name-safe word"):
        load_recipe(write(tmp_path, MINIMAL), ["name=__import__('os')"])


def test_override_can_create_missing_sections(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, MINIMAL), ["train.csd.negatives=3", "eval.widths=[0.25]"])
    assert r.train.csd.negatives == 3 and r.eval.widths == (0.25,)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.steps", "override 'train.steps': expected KEY=VALUE"),
        ("=3", "override '=3': bad key ''"),
        ("train..steps=3", "bad key 'train..steps'"),
        ("train.widths=[0.25", "override 'train.widths=[0.25': invalid YAML"),
        ("scale.x=1", "'scale' is int 2, not a section"),
    ],
)
def test_malformed_override(tmp_path: Path, override: str, needle: str) -> None:
    assert needle in error_of(write(tmp_path, MINIMAL), (override,))


def test_bad_override_is_blamed(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    msg = error_of(path, ("train.steps=ten",))
    assert msg.startswith(f"override 'train.steps=ten' (on {path}): train.steps: expected int")
    msg = error_of(path, ("train.stpes=3",))
    assert "override 'train.stpes=3'" in msg and "Did you mean 'train.steps'?" in msg


# --- YAML files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}: empty recipe")


def test_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- name: x\n")
    assert error_of(path) == f"{path}: expected a mapping at the top level, got list [{{'name': 'x'}}]"


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "  steps: 20\n")
    assert error_of(path) == f"{path}: duplicate key 'steps' on line 8 (first on line 7)"


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntrain: [1\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: invalid YAML") and "line" in msg


# --- dump, hash, replace ---------------------------------------------------------------------------


def test_dump_load_round_trip(tmp_path: Path) -> None:
    r = load_recipe(
        "quickstart", ["train.optim.grad_clip=1", "train.init=t.safetensors", "eval.widths=[1.0]"]
    )
    out = tmp_path / "run" / "recipe.yaml"
    save_recipe(r, out)
    assert out.read_text(encoding="utf-8") == dump_recipe(r)
    assert load_recipe(out) == r
    assert recipe_hash(load_recipe(out)) == recipe_hash(r)
    plain = recipe_to_dict(r)
    assert plain["train"]["widths"] == [0.25] and plain["train"]["optim"]["betas"] == [0.9, 0.999]


def test_hash_changes_only_with_content(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, MINIMAL))
    h = recipe_hash(r)
    assert len(h) == 16 and int(h, 16) >= 0
    # Same content, different spelling: comments, key order, 1 vs 1.0, explicit defaults.
    same = (
        "# a comment\ntrain: {steps: 10, optim: {lr: 0.0001}}\n"
        "model:\n  args: {n_feats: 16, n_resblocks: 2}\n"
    )
    assert recipe_hash(load_recipe(write(tmp_path, same + "scale: 2\nname: tiny\n", "s.yaml"))) == h
    assert recipe_hash(replace(r, "train.steps", 11)) != h
    assert recipe_hash(replace(r, "train.optim.lr", 2e-4)) != h
    assert recipe_hash(replace(r, "train.steps", 10)) == h


def test_replace_validates(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, MINIMAL))
    r2 = replace(r, "train.widths", (0.25, 0.5))
    assert r2.train.widths == (0.25, 0.5) and r.train.widths == (0.25,)
    with pytest.raises(RecipeError, match="unknown key 'train.stpes'"):
        replace(r, "train.stpes", 3)
    with pytest.raises(RecipeError, match="train.steps: expected int"):
        replace(r, "train.steps", "3")


def test_recipe_is_frozen(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, MINIMAL))
    with pytest.raises(AttributeError):
        r.train.steps = 3  # type: ignore[misc]
