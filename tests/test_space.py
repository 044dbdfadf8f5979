from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import optuna
import pytest
import torch

from nasconv.errors import NasconvError
from nasconv.model.arch import Arch, StageArch, build_model, load_arch
from nasconv.search.space import load_space, parse_space

from .conftest import SPACES, tiny_space_dict


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_load(path: Path) -> None:
    space = load_space(path)
    assert space.count() > 1
    assert space.genes()


def _error(data: dict) -> str:
    with pytest.raises(NasconvError) as info:
        parse_space(data, source="space.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_suggests_the_right_one() -> None:
    data = tiny_space_dict()
    data["stagess"] = data.pop("stages")
    assert _error(data) == "space.yaml: unknown key 'stagess' (did you mean 'stages'?)"


def test_nested_unknown_key_names_its_path() -> None:
    data = tiny_space_dict()
    data["stages"][0]["conv"]["het"]["pp"] = 2
    assert _error(data) == "space.yaml: stages[0].conv.het: unknown key 'pp' (did you mean 'p'?)"


def test_het_p_that_cannot_divide_is_rejected_at_load() -> None:
    data = tiny_space_dict()
    data["stages"][0]["conv"]["het"]["p"] = [2, 3]
    message = _error(data)
    assert message.startswith("space.yaml: stages[0].conv.het.p: 3 cannot build")
    assert "must divide in_channels" in message


def test_groups_must_divide_every_channel_choice() -> None:
    data = tiny_space_dict()
    data["stages"][0]["conv"]["group"]["groups"] = 8
    assert "stages[0].conv.group.groups: 8 cannot build 4->" in _error(data)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["stages"][0]["conv"]["standard"].update(kernel=[2]), "stages[0].conv.standard.kernel: "),
        (lambda d: d["stages"][0].update(channels=[]), "stages[0].channels: "),
        (lambda d: d["stages"][0]["conv"].update(hetconv={"p": 2}), "unknown key 'hetconv' (did you mean 'het'?)"),
        (lambda d: d.update(objectives=["accuracy", "mac"]), "unknown objective 'mac'"),
        (lambda d: d.update(objectives=[]), "objectives: name at least one"),
        (lambda d: d["stages"][0].update(conv={}), "stages[0]: conv: allow at least one kind"),
        (lambda d: d.pop("classes"), "classes: required key is missing"),
        (lambda d: d.update(dataset={"name": "cifar10"}), "needs a 'path'"),
        (lambda d: d["search"].update(sampler="cmaes"), "search.sampler: "),
        (lambda d: d["stages"][0].update(activation="gelu"), "stages[0].activation: 'gelu' is not one of relu"),
    ],
)
def test_malformed_spaces_give_one_line_with_key_path(mutate, expected: str) -> None:
    data = copy.deepcopy(tiny_space_dict())
    mutate(data)
    assert expected in _error(data)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(NasconvError, match="space file not found"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(NasconvError, match=r"bad.yaml: line \d+: not valid YAML"):
        load_space(bad)


def test_every_drawn_architecture_builds_and_trains_a_step() -> None:
    space = load_space(SPACES / "digits.yaml")
    x = torch.randn(2, 1, 16, 16)
    for seed in range(40):
        arch = space.sample(seed)
        model = build_model(arch)
        out = model(x)
        assert out.shape == (2, 10)
        out.sum().backward()


def test_encoding_is_conditional_so_every_drawn_gene_matters() -> None:
    # issue 10: drawing every option gene of every kind made 9,216 gene vectors for 336 networks
    space = load_space(SPACES / "digits.yaml")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        arch = space.suggest(trial)
        study.tell(trial, [0.5, 1.0])
        for i, stage in enumerate(arch.stages):
            drawn = {name.split(".")[1] for name in trial.params if name.startswith(f"s{i}.") and name.count(".") == 2}
            assert drawn == {stage.kind}  # only the drawn kind's options
    all_genes = {name for name, _ in space.genes()}
    assert all(set(t.params) <= all_genes for t in study.trials)


def test_count_is_the_exact_number_of_distinct_architectures() -> None:
    data = tiny_space_dict()
    data["stages"][0]["conv"]["dsc"] = {"kernel": [1, 3], "dilation": [1, 2]}  # 1x1 at any dilation is one net
    space = parse_space(data)
    archs = [space.decode(params) for params in space.enumerate()]
    assert len(archs) == space.count() == len({a.to_json() for a in archs})
    drawn = {space.sample(seed).to_json() for seed in range(400)}
    assert drawn <= {a.to_json() for a in archs}


def test_decode_follows_the_kind_gene() -> None:
    space = load_space(SPACES / "digits.yaml")
    params = {name: choices[0] for name, choices in space.genes()}
    params["s0.kind"] = "het"
    params["s0.het.p"] = 4
    arch = space.decode(params)
    assert arch.stages[0].kind == "het" and dict(arch.stages[0].options) == {"p": 4}
    assert arch.stages[1].stride == 2


def test_arch_round_trips_exactly(tmp_path: Path) -> None:
    space = load_space(SPACES / "digits.yaml")
    for seed in range(10):
        arch = space.sample(seed)
        assert Arch.from_json(arch.to_json()) == arch
        assert hash(Arch.from_json(arch.to_json())) == hash(arch)
        assert load_arch(arch.save(tmp_path / "a.yaml")) == arch
        assert load_arch(arch.save(tmp_path / "a.json")) == arch


def test_same_arch_builds_same_network() -> None:
    arch = load_space(SPACES / "digits.yaml").sample(1)
    torch.manual_seed(0)
    a = build_model(arch)
    torch.manual_seed(0)
    b = build_model(arch)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_load_arch_errors(tmp_path: Path) -> None:
    with pytest.raises(NasconvError, match="not found"):
        load_arch(tmp_path / "x.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: 3\n")
    with pytest.raises(NasconvError, match="not a nasconv architecture"):
        load_arch(bad)


def test_residual_only_where_shapes_match() -> None:
    space = load_space(SPACES / "digits.yaml")
    arch = space.decode({**{n: c[0] for n, c in space.genes()}, "stem.channels": 16, "s0.channels": 16, "s0.depth": 2})
    blocks = list(build_model(arch).blocks)
    assert [b.residual for b in blocks[:2]] == [True, True]
    assert blocks[2].residual is False  # stride 2


def _one_stage(conv: dict, **stage: object) -> dict:
    data = tiny_space_dict(stem={"channels": 8})
    data["stages"] = [{"stride": 1, "channels": 8, **stage, "conv": conv}]
    return data


def _distinct(space) -> set[Arch]:
    archs = [space.decode(params) for params in space.enumerate()]
    assert len(archs) == space.count()
    return set(archs)


def test_a_kind_that_ignores_the_stage_kernel_has_no_kernel_gene() -> None:
    # inception's branches take their kernels from `kernels`: a stage kernel would draw twins
    space = parse_space(_one_stage({"inception": {"kernels": [[1], [1, 3]], "dilation": [1, 2], "reduce": [0, 0.5]}}))
    assert "s0.inception.kernel" not in dict(space.genes())
    # kernels [1]: dilation and reduce change nothing (one net); kernels [1, 3]: 2 dilations x 2 reduces
    assert space.count() == 1 + 4 == len(_distinct(space))
    labels = {arch.short() for arch in _distinct(space)}
    assert labels == {"inception(b1)", "inception(b1-3)", "inception(dil2,b1-3)", "inception(b1-3,r0.5)",
                      "inception(dil2,b1-3,r0.5)"}  # fmt: skip
    message = _error(_one_stage({"inception": {"kernel": [3, 5], "kernels": [1, 3]}}))
    assert "stages[0].conv.inception: " in message and "no stage 'kernel'" in message and "kernels" in message


def test_a_stage_kernel_of_one_still_draws_inception_dilation() -> None:
    space = parse_space(_one_stage({"inception": {"kernels": [1, 3], "dilation": [1, 2]}}))
    assert space.count() == 2 == len(_distinct(space))
    assert {a.stages[0].dilation for a in _distinct(space)} == {1, 2}


def test_shuffle_of_one_group_is_not_a_second_network() -> None:
    space = parse_space(_one_stage({"group": {"groups": [1, 2], "shuffle": [False, True]}}))
    assert space.count() == 3 == len(_distinct(space))
    one = StageArch(kind="group", channels=8, options=(("groups", 1), ("shuffle", True)))
    assert one == StageArch(kind="group", channels=8, options=(("groups", 1),))


def test_stage_arch_of_a_kind_without_stage_kernel_is_canonical() -> None:
    options = (("kernels", (1, 3)),)
    five = StageArch(kind="inception", channels=8, kernel=5, options=options)
    assert five == StageArch(kind="inception", channels=8, kernel=3, options=options)
    assert five.short() == "inception(b1-3)"
    ones = StageArch(kind="inception", channels=8, dilation=2, options=(("kernels", (1,)), ("reduce", 0.5)))
    assert ones == StageArch(kind="inception", channels=8, options=(("kernels", (1,)),))


@pytest.mark.parametrize(("gene", "choices"), [("se", [0, 0.0]), ("se", [0.25, 0.250]), ("channels", [8, 8])], ids=str)
def test_duplicate_choices_are_compared_as_values(gene: str, choices: list) -> None:
    data = tiny_space_dict()
    data["stages"][0][gene] = choices
    assert f"stages[0].{gene}: duplicate choices" in _error(data)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"kernels": [1, 2]}, "stages[0].conv.inception.kernels: 2 must be odd"),
        ({"kernels": [1, 33]}, "stages[0].conv.inception.kernels: 33 is not between 1 and 31"),
        ({"kernels": [[1, 3], [1, 3]]}, "stages[0].conv.inception.kernels: duplicate choices"),
        ({"reduce": "half"}, "stages[0].conv.inception.reduce: 'half' is not a finite number"),
    ],
)
def test_built_in_kind_options_stay_strict(options: dict, expected: str) -> None:
    assert expected in _error(_one_stage({"inception": options}))


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"dw_kernel": 4}, "dw_kernel: 4 must be odd"), ({"dw_kernel": 33}, "dw_kernel: 33 is not between 1 and 31")],
)
def test_ghost_dw_kernel_is_an_odd_kernel_size(options: dict, expected: str) -> None:
    assert expected in _error(_one_stage({"ghost": options}))


def test_public_api_names_resolve() -> None:
    import nasconv

    for name in nasconv.__all__:
        assert getattr(nasconv, name) is not None, name
    assert {"TrainingSpec", "DatasetSpec", "space_data", "Profile"} <= set(nasconv.__all__)


# ---------------------------------------------------------------- issue 9 audit: size limits, strictness


def _cond_space(**stage: object) -> dict:
    """combo2.py: experts and kernel each fine alone, not together."""
    data = tiny_space_dict(stem={"channels": [32]})
    data["stages"] = [{"channels": [32], "depth": [1, 4], "conv": {"cond": {"experts": [1, 512], "kernel": [3, 31]}}}]
    data["stages"][0].update(stage)
    return data


def test_a_combination_of_options_is_bounded_not_each_option_alone() -> None:
    message = _error(_cond_space())
    assert message.startswith("space.yaml: stages[0].conv.cond: a 32->32 layer with kernel 31, experts 512 has ")
    assert "503,857,664 parameters (at most 67,108,864)" in message


def test_the_network_bound_takes_each_stage_at_its_worst_combination() -> None:
    # every layer within MAX_LAYER_PARAMS (experts 64 x kernel 15 at 64 channels: 59M), but 64 of them are not;
    # with the other option at its first value, each alone would be 64 x 2.4M
    data = _cond_space(channels=[64], depth=[1, 64], conv={"cond": {"experts": [1, 64], "kernel": [3, 15]}})
    data["stem"] = {"channels": [64]}
    message = _error(data)
    assert message.startswith("space.yaml: stages[0]: the largest network would have over 3,")
    assert "parameters by this stage (at most 1,000,000,000)" in message


@pytest.mark.parametrize(
    ("size", "channels", "kernel", "expected"),
    [
        (4096, 128, 31, "input.size: Input should be less than or equal to 1024, got 4096"),
        (1024, 128, 31, "stages[0]: the costliest network would need over 1.65e+13 MACs per image"),
        (1024, 256, 1, "stem.channels: 256 channels at 1024x1024 px make feature maps of 268,435,456 values"),
    ],
)
def test_compute_and_activation_are_limited_at_load(size: int, channels: int, kernel: int, expected: str) -> None:
    # heavy.py: accepted in 0.0 s, then an hour of cost measurement per block
    data = tiny_space_dict(input={"channels": 3, "size": size}, stem={"channels": [channels]})
    data["stages"] = [{"channels": [channels], "conv": {"standard": {"kernel": [kernel]}}}]
    assert expected in _error(data)


def test_an_imagenet_space_with_2048_channels_loads() -> None:
    stages = [
        {"stride": 2, "channels": [128, 256], "depth": [2, 3], "conv": {"standard": {"kernel": [1, 3]}}},
        {"stride": 2, "channels": [256, 512], "depth": [2, 4], "se": [0, 0.25], "conv": {"dsc": {"kernel": [3, 5]}}},
        {"stride": 2, "channels": [512, 1024], "depth": [3, 6], "conv": {"mbconv": {"kernel": [3, 5], "expand": [3, 6]},
                                                                          "group": {"groups": [2, 4]}}},
        {"stride": 2, "channels": [1024, 2048], "depth": [1, 3], "conv": {"standard": {"kernel": [1, 3]},
                                                                           "cond": {"experts": [2, 4], "kernel": 1}}},
    ]  # fmt: skip
    data = tiny_space_dict(input={"channels": 3, "size": 224}, classes=1000, stem={"channels": [32, 64], "stride": 2})
    data["stages"] = stages
    space = parse_space(data, source="imagenet.yaml")
    arch = space.decode(space.draw(lambda name, choices: choices[-1]))  # the largest network there
    assert arch.stages[-1].channels == 2048 and arch.input_size == 224
    arch.check()


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        (("stem", "kernel"), True, "stem.kernel: Input should be a valid integer, got True"),
        (("input", "channels"), "1", "input.channels: Input should be a valid integer, got '1'"),
        (("classes",), "3", "classes: Input should be a valid integer, got '3'"),
        (("stages", 0, "stride"), "2", "stages[0].stride: Input should be a valid integer, got '2'"),
        (("stages", 0, "stride"), 2.0, "stages[0].stride: Input should be a valid integer, got 2.0"),
        (("dropout",), "0.1", "dropout: Input should be a valid number, got '0.1'"),
        (("training", "channels_last"), "yes", "training.channels_last: Input should be a valid boolean, got 'yes'"),
        (("search", "trials"), True, "search.trials: Input should be a valid integer, got True"),
    ],
    ids=str,
)
def test_single_values_are_as_strict_as_lists(where: tuple, value: object, expected: str) -> None:
    data = tiny_space_dict()
    node = data
    for key in where[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[where[-1]] = value
    assert _error(data) == f"space.yaml: {expected}"


def test_numbers_in_yaml_12_notation_are_numbers(tmp_path: Path) -> None:
    # strict floats: "5e6" must not stay the text YAML 1.1 reads it as
    path = tmp_path / "space.yaml"
    path.write_text(Path(SPACES / "digits.yaml").read_text() + "constraints: {max_macs: 5e6, max_params: 2.5E+4}\n")
    assert load_space(path).spec.constraints.max_macs == 5_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("classes: 10\nname: x\nclasses: 3\n", "line 3: not valid YAML (duplicate key 'classes', first on line 1)"),
        ("stages:\n  - conv: {het: {p: 2}, het: {p: 4}}\n", "line 2: not valid YAML (duplicate key 'het', first on"),
        ("name: x\x07\n", "space.yaml: not valid YAML (unacceptable character #x0007"),
    ],
)  # fmt: skip
def test_duplicate_keys_and_yaml_errors_without_a_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(NasconvError) as info:
        load_space(path)
    assert expected in str(info.value) and "::" not in str(info.value)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "name: merged\ninput: {channels: 1, size: 8}\nclasses: 3\ndataset: {name: synthetic}\nstages:\n"
        "  - &first {stride: 1, channels: [8], conv: {standard: {kernel: 3}}}\n"
        "  - {<<: *first, stride: 2}\n"  # an explicit key overrides a merged one: YAML's rule, not a duplicate
    )
    assert [stage.stride for stage in load_space(path).spec.stages] == [1, 2]


def _arch_data() -> dict:
    return load_space(SPACES / "digits.yaml").sample(3).to_dict()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["stages"][0].update(activation=["relu"]), "stages[0].activation: ['relu'] is not one of relu"),
        (lambda d: d.update(input_size=10**30), "input_size: 10000000000000000000000000000"),
        (lambda d: d.update(stages=[]), "stages: 0 stages; a network has 1 to 32"),
        (lambda d: d.update(stem_channels=100_000), "stem_channels: 100000 is not between 1 and 16384"),
        (lambda d: d.update(stem_kernel=True), "stem_kernel: True is not an integer"),
        (lambda d: d["stages"][0].update(kind=["het"]), "stages[0].kind: unknown conv kind ['het']"),
        (lambda d: d["stages"][0].update(kind="cond", options={"experts": 99_999}), "options.experts: 99999 is not"),
        (lambda d: d["stages"][0].update(kind="cond", options={"experts": 4096}, channels=1024),
         "->1024 cond(e4096) layer has"),
        (lambda d: d.update(input_size=1024, stem_channels=256), "stem_channels: a 1->256 stem makes a feature map of"),
        (lambda d: d["stages"][0].update(se=0.995), "stages[0].se: 0.995 is not between 0 and 0.99"),
    ],
)  # fmt: skip
def test_stored_architectures_have_the_space_limits_and_types(mutate, expected: str, tmp_path: Path) -> None:
    data = _arch_data()
    mutate(data)
    with pytest.raises(NasconvError) as info:
        Arch.from_json(json.dumps(data), where="results/x: trial 3")
    assert str(info.value).startswith("results/x: trial 3: ") and expected in str(info.value), str(info.value)
    path = tmp_path / "arch.yaml"
    path.write_text(json.dumps(data))
    with pytest.raises(NasconvError, match=re.escape(f"{path}: ")):
        load_arch(path)


_BOUND_OPTIONS = {
    "standard": {"kernel": [[1, 3], [3, 5]]},
    "group": {"kernel": [[1, 3]], "groups": [[1, 2], [2, 4]], "shuffle": [[False, True]]},
    "dsc": {"kernel": [[3, 5]]},
    "het": {"kernel": [[3, 5]], "p": [[1, 2], [2, 4]]},
    "ghost": {"kernel": [[1, 3]], "ratio": [[2, 3]], "dw_kernel": [[1, 3, 5]]},
    "cond": {"kernel": [[1, 3, 5]], "experts": [[1, 3], [2, 5]]},
    "spatial": {"kernel": [[3, 5]], "mid": [[0.5, 1.0], [0.25, 2.0]]},
    "flattened": {"kernel": [[3, 5]]},
    "inception": {"kernels": [[[1, 3], [3, 5]], [[1], [1, 3, 5]]], "reduce": [[0, 0.5]]},
    "mbconv": {"kernel": [[3, 5]], "expand": [[1, 2], [1, 3, 6]]},
    "deform": {"kernel": [[1, 3]], "modulated": [[False, True]]},
}


@pytest.mark.parametrize("seed", range(6))
def test_the_size_bound_is_the_true_worst_case_of_a_small_space(seed: int) -> None:
    # the bound (closed forms, per stage, no enumeration) against every architecture, counted by thop
    from nasconv.model.arch import head_figures, stem_figures
    from nasconv.model.cost import static_costs
    from nasconv.ops import ConvOp
    from nasconv.search.space import _stage_worst

    rng = random.Random(seed)
    kinds = rng.sample(sorted(_BOUND_OPTIONS), 3)
    conv = {kind: {name: rng.choice(values) for name, values in _BOUND_OPTIONS[kind].items()} for kind in kinds}
    data = tiny_space_dict(stem={"channels": rng.choice([[4, 8], [8, 16]])})
    data["stages"] = [{"stride": rng.choice([1, 2]), "channels": rng.choice([[8, 16], [16, 32]]),
                       "depth": [1, 2], "se": rng.choice([[0], [0, 0.25]]), "conv": conv}]  # fmt: skip
    space = parse_space(data, source="small.yaml")
    spec = space.spec
    worst = _stage_worst(spec, 0, tuple(spec.stem.channels), spec.input.size)
    stems = [stem_figures(1, c, spec.stem.kernel, 1, spec.input.size) for c in spec.stem.channels]
    head = head_figures(max(spec.stages[0].channels), spec.classes)
    params = macs = layer = 0
    for genes in space.enumerate():
        arch = space.decode(genes)
        costs = static_costs(arch)
        params, macs = max(params, costs["params"]), max(macs, costs["macs"])
        with torch.device("meta"):
            blocks = build_model(arch).blocks
        layer = max(layer, *(sum(p.numel() for p in m.parameters()) for m in blocks.modules() if isinstance(m, ConvOp)))
    assert worst.layer_params == layer
    assert max(s.params for s in stems) + worst.params + head.params == params
    assert max(s.macs for s in stems) + worst.macs + head.macs == macs
