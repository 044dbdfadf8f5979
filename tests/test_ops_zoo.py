"""The kinds of issue 13 (spatial, flattened, inception, mbconv, deform, depthwise cond): worked
examples and the behaviour each paper defines (their MACs against the closed forms each kind
declares are checked registry-wide in test_ops.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nasconv.model.cost import profile
from nasconv.ops import build_conv


def test_params_at_a_worked_shape() -> None:
    # 16 -> 32, k3: spatial c=32: 32*16*3 + 32*32*3; flattened 32*16 + 2*32*3; mbconv t6: 16*96 + 96*9 + 96*32
    assert profile(build_conv("spatial", 16, 32), (16, 8, 8)).params == 1536 + 3072
    assert profile(build_conv("flattened", 16, 32), (16, 8, 8)).params == 512 + 192
    assert profile(build_conv("mbconv", 16, 32, expand=6), (16, 8, 8)).params == 1536 + 864 + 3072
    # inception 16 -> 32, branches 1/3/5 get 11/11/10 channels
    assert profile(build_conv("inception", 16, 32), (16, 8, 8)).params == 16 * 11 + 16 * 11 * 9 + 16 * 10 * 25
    # deform 16 -> 32: 32*16*9 + 18*(16*9 + 1), modulated + 9*(16*9 + 1)
    assert profile(build_conv("deform", 16, 32), (16, 8, 8)).params == 4608 + 18 * 145
    assert profile(build_conv("deform", 16, 32, modulated=True), (16, 8, 8)).params == 4608 + 27 * 145
    assert profile(build_conv("cond", 16, 32, experts=4, depthwise=True), (16, 8, 8)).params == 4 * 32 * 9 + 64 + 4


def baddbmm_flops(
    self_shape: torch.Size, a_shape: torch.Size, b_shape: torch.Size, *args: object, **kwargs: object
) -> int:
    return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_deform_aten_flops_are_the_rule_less_the_sampling(modulated: bool, stride: int) -> None:
    op = build_conv("deform", 8, 16, 3, stride, modulated=modulated)
    x = torch.randn(2, 8, 9, 9)
    # the forward accumulates tap by tap with the in-place baddbmm_, which torch's table leaves out
    in_place = {torch.ops.aten.baddbmm_: baddbmm_flops}
    with FlopCounterMode(display=False, custom_mapping=in_place) as counter:
        op(x)
    positions = 2 * math.ceil(9 / stride) ** 2
    sampling = op.sampling_macs_per_position() * positions  # type: ignore[operator]
    assert counter.get_total_flops() == 2 * (op.count_macs(tuple(x.shape)) - sampling)


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_deform_starts_as_a_standard_conv(stride: int, dilation: int) -> None:
    torch.manual_seed(0)
    op = build_conv("deform", 5, 7, 3, stride, dilation)
    x = torch.randn(2, 5, 11, 10)
    torch.testing.assert_close(op(x), F.conv2d(x, op.weight, None, stride, dilation, dilation), rtol=1e-5, atol=1e-5)
    modulated = build_conv("deform", 5, 7, 3, stride, dilation, modulated=True)
    with torch.no_grad():
        modulated.weight.copy_(op.weight)
    torch.testing.assert_close(modulated(x), 0.5 * op(x), rtol=1e-5, atol=1e-5)


def test_deform_integer_offset_shifts_the_input() -> None:
    torch.manual_seed(0)
    op = build_conv("deform", 3, 4, 3)
    with torch.no_grad():
        op.offset_bias[0::2] = 1.0  # every tap reads one row further down
    x = torch.randn(1, 3, 8, 8)
    shifted = torch.cat([x[:, :, 1:], torch.zeros(1, 3, 1, 8)], 2)
    expected = F.conv2d(shifted, op.weight, None, 1, 1)
    # (row 0's top taps now read image row 0, where the shifted copy has padding)
    torch.testing.assert_close(op(x)[:, :, 1:], expected[:, :, 1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize(("m", "n", "k", "stride", "dilation", "batch"), [(6, 8, 3, 1, 1, 2), (9, 7, 3, 2, 2, 1)])
def test_deform_equals_the_reference_at_learned_offsets(
    modulated: bool, m: int, n: int, k: int, stride: int, dilation: int, batch: int
) -> None:
    torch.manual_seed(0)
    op = build_conv("deform", m, n, k, stride, dilation, bias=True, modulated=modulated)
    with torch.no_grad():  # fractional offsets, some reading outside the image
        op.offset_weight.normal_(0, 0.3)
        op.offset_bias.normal_(0, 2.0)
        op.bias.normal_()
    x = torch.randn(batch, m, 9, 8)
    for mode in (op.train, op.eval):
        mode()
        torch.testing.assert_close(op(x), op.reference_forward(x), rtol=1e-4, atol=1e-4)
    # and the offsets learn: their gradient flows through the sampling
    op(x).square().sum().backward()
    assert op.offset_weight.grad is not None and op.offset_weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("m", "n", "stride", "dilation", "batch"), [(6, 6, 1, 1, 3), (5, 10, 2, 2, 1), (7, 7, 2, 1, 2)]
)
def test_depthwise_condconv_mixes_depthwise_experts_per_sample(
    m: int, n: int, stride: int, dilation: int, batch: int
) -> None:
    torch.manual_seed(0)
    op = build_conv("cond", m, n, 3, stride, dilation, bias=True, experts=3, depthwise=True)
    torch.nn.init.normal_(op.bias)
    assert op.weight.shape == (3, n, 1, 3, 3)
    x = torch.randn(batch, m, 9, 9)
    y = op(x)
    for i in range(batch):
        alpha = op.routing(x[i : i + 1])[0]
        kernel = torch.einsum("e,enchw->nchw", alpha, op.weight)
        ref = F.conv2d(x[i : i + 1], kernel, alpha @ op.bias, stride, dilation, dilation, m)
        torch.testing.assert_close(y[i : i + 1], ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(op.forward_expert_sum(x), y, rtol=1e-5, atol=1e-5)


def test_inception_splits_channels_and_ignores_the_stage_kernel() -> None:
    op = build_conv("inception", 8, 11, 5, kernels=[1, 3, 5], reduce=0.5)
    assert op.kernels == [1, 3, 5] and op.branch_out == [4, 4, 3] and op.branch_reduce == [0, 2, 2]
    same = build_conv("inception", 8, 11, 3, kernels=(1, 3, 5), reduce=0.5)
    assert profile(op, (8, 6, 6)).params == profile(same, (8, 6, 6)).params
    x = torch.randn(1, 8, 6, 6)
    reduction, kernel = op.branch_weights(0)
    assert reduction is None and kernel.shape == (4, 8, 1, 1)
    torch.testing.assert_close(op(x)[:, :4], F.conv2d(x, kernel))


def test_mbconv_expand_one_has_no_expansion() -> None:
    op = build_conv("mbconv", 8, 8, 3, expand=1)
    assert op.expansion is None and op.depthwise.shape == (8, 1, 3, 3)
    names = {name for name, _ in build_conv("mbconv", 8, 8, 3, expand=6).named_parameters()}
    assert names == {"expansion", "depthwise", "projection"}


def test_separable_kinds_compose_to_low_rank_kernels() -> None:
    torch.manual_seed(0)
    flat = build_conv("flattened", 4, 6, 5)
    kernel = torch.einsum(
        "nm,ni,nj->nmij", flat.lateral[:, :, 0, 0], flat.vertical[:, 0, :, 0], flat.horizontal[:, 0, 0]
    )
    assert int(torch.linalg.matrix_rank(kernel[0].reshape(4, 25))) == 1
    spatial = build_conv("spatial", 4, 6, 5, mid=1 / 3)
    assert spatial.mid_channels == 2 and spatial.vertical.shape == (2, 4, 5, 1)


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_exports_to_onnx_and_torchscript_at_learned_offsets(modulated: bool, tmp_path: Path) -> None:
    import onnxruntime as ort

    from nasconv.results.export import export_onnx

    torch.manual_seed(0)
    op = build_conv("deform", 4, 6, 3, 2, 2, modulated=modulated).eval()
    with torch.no_grad():
        op.offset_weight.normal_(0, 0.3)
        op.offset_bias.normal_(0, 2.0)
    x = torch.randn(2, 4, 9, 11)
    with torch.inference_mode():
        expected = op(x)
    export_onnx(op, x, tmp_path / "deform.onnx")
    session = ort.InferenceSession(str(tmp_path / "deform.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": torch.randn(3, 4, 9, 11).numpy()})  # another batch size runs too
    assert got[0].shape == (3, 6, 5, 6)
    onnx_out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    torch.testing.assert_close(onnx_out, expected, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(torch.jit.script(op)(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", ["dense", "split", "sorted", "auto"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_hetconv_forms_export_to_onnx_and_torchscript(form: str, channels_last: bool, tmp_path: Path) -> None:
    import onnxruntime as ort

    from nasconv.results.export import export_onnx

    torch.manual_seed(0)
    op = build_conv("het", 32, 32, 3, 1, p=2, bias=True).eval()  # 16 channels per group: every form applies
    torch.nn.init.normal_(op.bias)
    op.form = form
    x = torch.randn(2, 32, 8, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = op.reference_forward(x)
        torch.testing.assert_close(torch.jit.script(op)(x), expected, rtol=1e-4, atol=1e-4)
    export_onnx(op, x, tmp_path / "het.onnx")
    session = ort.InferenceSession(str(tmp_path / "het.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.contiguous().numpy()})[0])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["reference.yaml", "cifar10.yaml"])
def test_the_shipped_spaces_use_the_new_kinds(name: str) -> None:
    from nasconv.model.arch import build_model, input_shape
    from nasconv.search.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / name)
    genes = dict(space.genes())
    offered = {kind for gene, choices in genes.items() if gene.endswith(".kind") for kind in choices}
    assert {"spatial", "flattened", "inception", "mbconv", "deform"} <= offered
    first = {gene: choices[0] for gene, choices in genes.items()}
    for gene in (g for g in genes if g.endswith(".kind")):  # every stage's every kind builds and runs
        for kind in genes[gene]:
            arch = space.decode({**first, gene: kind})
            with torch.inference_mode():
                assert build_model(arch).eval()(torch.zeros(input_shape(arch))).shape == (1, arch.classes)


def test_mid_and_reduce_channels_round_half_to_even() -> None:
    # Python's round(), as the spatial and inception docstrings say: 2.5 -> 2, 3.5 -> 4
    assert build_conv("spatial", 4, 5, mid=0.5).mid_channels == 2
    assert build_conv("spatial", 4, 7, mid=0.5).mid_channels == 4
    assert build_conv("inception", 4, 10, kernels=(1, 3), reduce=0.5).branch_reduce == [0, 2]
