from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import torch

from nasconv.errors import NasconvError
from nasconv.model.arch import Arch, build_model, load_arch
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
