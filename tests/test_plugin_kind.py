"""A conv kind is one file: a third-party package that declares the entry-point group ``nasconv.ops``
is discovered like the built-in kinds, listed by ``nasconv ops``, usable in a space, costed, trained
and exported to a standalone model.py, with no nasconv file edited."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
import torch
import yaml

from nasconv.errors import NasconvError
from nasconv.model.arch import build_model
from nasconv.ops import KERNEL_SIZE, ConvOp, kaiming_
from nasconv.search.space import parse_space

from .conftest import tiny_space_dict

KIND = '''
"""Twin convolution: two k x k kernels on the two halves of the input channels, summed (a toy kind)."""

from fractions import Fraction
from typing import Any

import torch

from nasconv.ops import ConvOp, kaiming_, register


@register("twin")
class TwinConv(ConvOp):
    order = 500
    short_names = {"gain": "g"}
    examples = ({"gain": 1.0}, {"gain": 0.5})
    standalone_imports = ("from fractions import Fraction",)

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        return out_channels * in_channels * kernel_size**2

    @classmethod
    def macs_formula(
        cls, in_channels: int, out_channels: int, kernel_size: int, stride: int, height: int, width: int, **options: Any
    ) -> int:
        return out_channels * in_channels * kernel_size**2 * -(-height // stride) * -(-width // stride)

    def __init__(
        self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, bias=False, *, gain: float = 1.0
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        self.gain = float(Fraction(gain).limit_denominator(1000))  # a module the standalone file must import
        half, k = in_channels // 2, self.kernel_size
        self.first = torch.nn.Parameter(kaiming_(torch.empty(out_channels, half, k, k), half * k * k))
        rest = in_channels - half
        self.second = torch.nn.Parameter(kaiming_(torch.empty(out_channels, rest, k, k), in_channels * k * k))

    def macs_per_position(self) -> int:
        return self.out_channels * self.in_channels * self.kernel_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.in_channels // 2
        return self.conv(x[:, :half], self.first) + self.gain * self.conv(x[:, half:], self.second, bias=self.bias)
'''


def _install(site: Path) -> dict[str, str]:
    (site / "nasconv_twin").mkdir(parents=True)
    (site / "nasconv_twin" / "__init__.py").write_text(KIND)
    info = site / "nasconv_twin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nasconv-twin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nasconv.ops]\ntwin = nasconv_twin\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}


def test_an_installed_package_adds_a_kind_everywhere(tmp_path: Path) -> None:
    env = _install(tmp_path / "site")
    listed = subprocess.run(
        [sys.executable, "-m", "nasconv.cli", "ops", "--in", "8", "--out", "8", "--size", "4", "--kind", "twin"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "twin" in listed.stdout and "gain=0.5" in listed.stdout and "9,216" in listed.stdout  # 576 x 16 px

    space = tiny_space_dict(training={"epochs": 1})
    space["stages"][0]["conv"] = {"twin": {"gain": [0.5, 1.0]}, "dsc": {}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    script = textwrap.dedent(f"""
        import json, torch
        from nasconv.model.arch import build_model
        from nasconv.model.cost import static_costs
        from nasconv.results.export import export
        from nasconv.search.data import space_data
        from nasconv.search.space import load_space
        from nasconv.search.training import train
        space = load_space({str(tmp_path / "space.yaml")!r})
        genes = next(g for g in space.enumerate() if g["s0.kind"] == "twin")
        arch = space.decode(genes)
        costs = static_costs(arch)
        result, model = train(arch, space_data(space.spec), space.spec.training)
        report = export(arch, model, {str(tmp_path / "export")!r}, ["arch", "pt", "py", "ts", "onnx"])
        print(json.dumps({{"short": arch.short(), "macs": costs["macs"], "accuracy": result.accuracy,
                          "formats": sorted(report)}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["short"].startswith("twin(g0.5)") and out["macs"] > 0 and 0 <= out["accuracy"] <= 1
    assert out["formats"] == ["arch", "onnx", "pt", "py", "ts"]
    # the standalone model.py carries the plugin's class: it runs with torch alone
    model_py = (tmp_path / "export" / "model.py").read_text()
    assert "class TwinConv" in model_py and "import nasconv" not in model_py and "from nasconv" not in model_py
    assert model_py.splitlines().count("from fractions import Fraction") == 1  # its declared import, once
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path / 'export')!r}); sys.modules['nasconv'] = None; "
        "import model, torch; print(model.build_model()(torch.zeros(1, 1, 8, 8)).shape)"
    )
    check = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr[-2000:]


def test_a_broken_plugin_is_reported_once_and_skipped(tmp_path: Path) -> None:
    env = _install(tmp_path / "site")
    (tmp_path / "site" / "nasconv_twin" / "__init__.py").write_text("raise ImportError('half-installed')\n")
    run = subprocess.run(
        [sys.executable, "-m", "nasconv.cli", "ops"], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0 and "standard" in run.stdout
    assert run.stderr.count("not loaded (half-installed)") == 1


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kinds registered in a test stay in that test."""
    from nasconv.ops import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def _one_stage(conv: dict) -> dict:
    data = tiny_space_dict()
    data["stages"] = [{"stride": 1, "channels": 8, "conv": conv}]
    return data


class _Dense(ConvOp):
    """A dense conv whose options change nothing: what these tests need is the schema."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, bias: bool = False) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        k = self.kernel_size
        self.weight = torch.nn.Parameter(kaiming_(torch.empty(out_channels, in_channels, k, k), in_channels * k * k))

    def macs_per_position(self) -> int:
        return self.out_channels * self.in_channels * self.kernel_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight, bias=self.bias)


@pytest.mark.usefixtures("registry")
def test_a_kind_registered_after_import_is_usable_in_a_space() -> None:
    import nasconv
    from nasconv.ops import CONV_KINDS  # taken before the kind exists

    @nasconv.register("later")
    class Later(_Dense):
        order = 10_000

        def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                     dilation: int = 1, bias: bool = False, *, scale: float = 1.0) -> None:  # fmt: skip
            super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)

    assert CONV_KINDS[-1] == "later" and "later" in nasconv.CONV_KINDS
    space = parse_space(_one_stage({"later": {"scale": [0.5, 1.0]}, "dsc": {}}))
    assert space.count() == 2 * 3  # stem channels x (two scales + dsc)
    arch = space.decode({**{name: choices[0] for name, choices in space.genes()}, "s0.kind": "later"})
    assert arch.stages[0].short() == "later(scale0.5)"
    assert build_model(arch)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.usefixtures("registry")
def test_the_schema_of_a_kind_comes_from_its_annotations() -> None:
    from nasconv.ops import register

    @register("typed")
    class Typed(_Dense):
        option_rules = {"size": KERNEL_SIZE}

        def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                     dilation: int = 1, bias: bool = False, *, mode: Literal["a", "b"] = "a", label: str = "x",
                     widths: tuple[int, ...] = (2, 4), gain: float | None = None, flag: bool = False,
                     count: int = 1, size: int = 3) -> None:  # fmt: skip
            super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)

    options = {"mode": ["a", "b"], "label": "any text", "widths": [[2, 4], [6]], "gain": [None, 0.5],
               "flag": [False, True], "count": [1, 2], "size": 5}  # fmt: skip
    space = parse_space(_one_stage({"typed": options}))
    assert space.count() == 2 * 2 * 2 * 2 * 2 * 2  # stem channels x the five two-way options
    drawn = [dict(space.decode(g).stages[0].options) for g in space.enumerate()]
    assert {d["widths"] for d in drawn} == {(2, 4), (6,)} and {d["gain"] for d in drawn} == {None, 0.5}
    assert {d["label"] for d in drawn} == {"any text"} and {d["size"] for d in drawn} == {5}
    for bad, message in [
        ({"mode": "c"}, "typed.mode: 'c' is not one of a, b"),
        ({"widths": [2.5]}, "typed.widths: 2.5 is not an integer"),
        ({"size": 4}, "typed.size: 4 must be odd"),
        ({"gain": "loud"}, "typed.gain: 'loud' is not a finite number"),
        ({"flag": 1}, "typed.flag: 1 is not true/false"),
        ({"count": 1.5}, "typed.count: 1.5 is not an integer"),
    ]:
        with pytest.raises(NasconvError, match=message):
            parse_space(_one_stage({"typed": bad}))


@pytest.mark.usefixtures("registry")
def test_an_option_type_the_schema_cannot_read_is_one_line() -> None:
    from nasconv.ops import register

    @register("mapped")
    class Mapped(_Dense):
        def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                     dilation: int = 1, bias: bool = False, *, table: dict[str, int] | None = None,
                     ) -> None:  # fmt: skip
            super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)

    with pytest.raises(NasconvError, match=r"stages\[0\]\.conv: mapped: option 'table' has type .* the space schema"):
        parse_space(_one_stage({"mapped": {}}))
