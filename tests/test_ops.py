from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nasconv.model.cost import profile
from nasconv.ops import CONV_KINDS, ConvOp, build_conv, op_class, register
from nasconv.ops.group import channel_shuffle
from nasconv.ops.het import HetConv

# every registered kind with every example its class declares: a new kind is tested by being registered
DEFAULTS = {kind: op_class(kind).examples[0] for kind in CONV_KINDS}
VARIANTS = [(kind, example) for kind in CONV_KINDS for example in op_class(kind).examples]


def test_registry_lists_every_kind() -> None:
    import importlib
    import pkgutil

    import nasconv.ops

    # every module of the package registers at least one kind, and the registry lists all of them
    discovered = set()
    for module in pkgutil.iter_modules(nasconv.ops.__path__):
        if module.name == "base" or module.name.startswith("_"):
            continue
        found = importlib.import_module(f"nasconv.ops.{module.name}")
        kinds = {c.kind for c in vars(found).values() if isinstance(c, type) and issubclass(c, ConvOp) and c.kind}
        assert kinds, f"nasconv/ops/{module.name}.py registers no kind"
        discovered |= {k for k in kinds if op_class(k).__module__ == found.__name__}
    assert discovered <= set(CONV_KINDS)
    assert list(CONV_KINDS) == sorted(CONV_KINDS, key=lambda k: (op_class(k).order, k))


@pytest.mark.parametrize("kind", [k for k in CONV_KINDS if op_class(k).has_reference()])
@pytest.mark.parametrize(
    ("m", "n", "k", "stride", "dilation", "batch"), [(8, 12, 3, 1, 1, 2), (9, 7, 3, 2, 2, 1), (9, 9, 5, 2, 2, 1)]
)
def test_forward_equals_the_reference(
    kind: str, m: int, n: int, k: int, stride: int, dilation: int, batch: int
) -> None:
    for options in op_class(kind).examples:
        try:
            op = build_conv(kind, m, n, k, stride, dilation, bias=True, **options)
        except ValueError:
            continue
        torch.manual_seed(0)
        torch.nn.init.normal_(op.bias)
        x = torch.randn(batch, m, 9, 9)
        for mode in (op.train, op.eval):
            mode()
            torch.testing.assert_close(op(x), op.reference_forward(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", CONV_KINDS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("size", [7, 8])
def test_same_padding_shape(kind: str, stride: int, dilation: int, kernel: int, size: int) -> None:
    op = build_conv(kind, 8, 12, kernel, stride, dilation, **DEFAULTS[kind])
    y = op(torch.randn(2, 8, size, size + 1))
    assert y.shape == (2, 12, math.ceil(size / stride), math.ceil((size + 1) / stride))
    assert op.output_size(size, size + 1) == tuple(y.shape[-2:])


@pytest.mark.parametrize(("kind", "kw"), VARIANTS)
def test_backward_reaches_every_parameter(kind: str, kw: dict) -> None:
    op = build_conv(kind, 8, 8, 3, bias=True, **kw)
    op(torch.randn(3, 8, 6, 6)).square().mean().backward()
    for name, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name != "routing_bias":
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("kind", "kw"), VARIANTS)
@pytest.mark.parametrize("stride", [1, 2])
def test_channels_last_input_gives_the_same_output(kind: str, kw: dict, stride: int) -> None:
    torch.manual_seed(0)
    op = build_conv(kind, 16, 16, 3, stride, bias=True, **kw)
    x = torch.randn(2, 16, 9, 10)
    y = op(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, op(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS)
@pytest.mark.parametrize(
    ("m", "n", "k", "stride", "h", "w"), [(8, 16, 3, 1, 10, 10), (16, 8, 5, 2, 9, 12), (12, 12, 1, 1, 10, 10)]
)
def test_params_and_macs_match_closed_forms(
    kind: str, kw: dict, m: int, n: int, k: int, stride: int, h: int, w: int
) -> None:
    """The counted params and MACs (what profile reports) against the formulas each kind declares."""
    try:
        op = build_conv(kind, m, n, k, stride, **kw)
    except ValueError as exc:
        pytest.skip(f"not buildable at this shape: {exc}")
    cls = op_class(kind)
    prof = profile(op, (2, m, h, w))
    assert prof.params == cls.closed_form_params(m, n, k, **kw)
    assert prof.macs == 2 * cls.closed_form_macs(m, n, k, stride, height=h, width=w, **kw)
    if type(op).macs_per_sample is ConvOp.macs_per_sample:  # the per-output-pixel rule
        positions = math.ceil(h / stride) * math.ceil(w / stride)
        assert prof.macs == 2 * (op.macs_per_position() * positions + op.extra_macs())


@pytest.mark.parametrize("kind", CONV_KINDS)
def test_closed_forms_take_omitted_options_at_their_defaults(kind: str) -> None:
    cls = op_class(kind)
    try:
        op = build_conv(kind, 16, 16, 3, 2)
    except ValueError as exc:
        pytest.skip(f"its defaults do not build 16->16: {exc}")
    assert profile(op, (16, 9, 9)).params == cls.closed_form_params(16, 16, 3)
    assert profile(op, (16, 9, 9)).macs == cls.closed_form_macs(16, 16, 3, 2, height=9, width=9)
    with pytest.raises(ValueError, match="has no parameter 'nonsense'"):
        cls.closed_form_params(16, 16, 3, nonsense=1)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS)
@pytest.mark.parametrize("layout", ["sliced", "sliced channels-last", "transposed"])
def test_a_non_contiguous_input_gives_the_same_output(kind: str, kw: dict, layout: str) -> None:
    torch.manual_seed(0)
    op = build_conv(kind, 16, 16, 3, bias=True, **kw)
    base = torch.randn(2, 16, 18, 10)
    if layout == "sliced":
        x = base[:, :, ::2]
    elif layout == "sliced channels-last":
        x = base.contiguous(memory_format=torch.channels_last)[:, :, ::2]
    else:
        x = base[:, :, :10].transpose(2, 3)
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(op(x), op(x.contiguous()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "m", "n", "kw", "expected"),
    [
        ("standard", 6, 8, {}, 432),
        ("group", 6, 8, {"groups": 2}, 216),
        ("dsc", 5, 10, {}, 95),
        ("het", 6, 4, {"p": 3}, 88),
    ],
)
def test_worked_examples_from_the_literature(kind: str, m: int, n: int, kw: dict, expected: int) -> None:
    assert profile(build_conv(kind, m, n, 3, **kw), (m, 5, 5)).params == expected


@pytest.mark.parametrize(("kind", "kw"), [v for v in VARIANTS if op_class(v[0]).flops_match_aten])
@pytest.mark.parametrize("stride", [1, 2])
def test_macs_agree_with_torch_flop_counter(kind: str, kw: dict, stride: int) -> None:
    op = build_conv(kind, 8, 16, 3, stride, **kw)
    x = torch.randn(2, 8, 9, 9)
    with FlopCounterMode(display=False) as counter:
        op(x)
    assert counter.get_total_flops() == 2 * profile(op, tuple(x.shape)).macs


@pytest.mark.parametrize(("m", "n", "p"), [(6, 4, 3), (8, 8, 4), (64, 32, 4), (12, 10, 2)])
@pytest.mark.parametrize(("k", "stride", "dilation"), [(3, 1, 1), (3, 2, 2), (5, 1, 1)])
@pytest.mark.parametrize("form", [*HetConv.FORMS, "auto"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_hetconv_equals_per_kernel_reference(
    m: int, n: int, p: int, k: int, stride: int, dilation: int, form: str, channels_last: bool
) -> None:
    torch.manual_seed(0)
    op = build_conv("het", m, n, k, stride, dilation, p=p)
    if form != "dense" and n % p:
        pytest.skip("the grouped forms need P to divide out_channels")
    op.form = form
    x = torch.randn(2, m, 9, 9)
    y = op(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    torch.testing.assert_close(y, op.reference_forward(x), rtol=1e-4, atol=1e-4)


def test_hetconv_cyclic_arrangement() -> None:
    op = build_conv("het", 6, 4, 3, p=3)
    w = op.dense_weight()
    outer_taps = w.clone()
    outer_taps[:, :, 1, 1] = 0
    has_kxk = outer_taps.abs().sum((2, 3)) > 0
    expected = torch.tensor([[(i - n) % 3 == 0 for i in range(6)] for n in range(4)])
    assert torch.equal(has_kxk, expected)
    assert int((w != 0).sum()) == 88  # every weight is a parameter, nothing dense is hidden


def test_hetconv_p_must_divide_in_channels() -> None:
    with pytest.raises(ValueError, match="p=3 must divide in_channels=8"):
        build_conv("het", 8, 8, p=3)


@pytest.mark.parametrize("stride", [1, 2])
def test_condconv_batch_equals_samples_one_by_one(stride: int) -> None:
    torch.manual_seed(0)
    op = build_conv("cond", 6, 10, 3, stride, experts=3, bias=True)
    x = torch.randn(5, 6, 8, 8)
    batched = op(x)
    singles = torch.cat([op(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)
    alpha = op.routing(x[:1])
    kernel = (alpha @ op.weight.view(3, -1)).view(10, 6, 3, 3)
    ref = F.conv2d(x[:1], kernel, (alpha @ op.bias)[0], stride, 1)
    torch.testing.assert_close(batched[:1], ref, rtol=1e-5, atol=1e-5)


def test_ghost_keeps_primary_maps_first() -> None:
    op = build_conv("ghost", 4, 7, 3, ratio=3)
    x = torch.randn(1, 4, 6, 6)
    primary = F.conv2d(x, op.primary, None, 1, 1)
    assert op.primary_channels == 3
    torch.testing.assert_close(op(x)[:, :3], primary)


def test_group_shuffle_interleaves_groups() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_dsc_is_depthwise_then_pointwise() -> None:
    op = build_conv("dsc", 3, 5, 3, 2)
    x = torch.randn(1, 3, 7, 7)
    ref = F.conv2d(F.conv2d(x, op.depthwise, None, 2, 1, 1, 3), op.pointwise)
    torch.testing.assert_close(op(x), ref)


def test_unknown_kind_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown conv kind 'hett'; known kinds: .*het"):
        build_conv("hett", 4, 4)


@pytest.mark.parametrize(
    ("kind", "args", "kw", "message"),
    [
        ("het", (4, 4), {"ratio": 2}, "has no parameter 'ratio'"),
        ("group", (6, 8), {"groups": 4}, "groups=4 must divide"),
        ("standard", (4, 4, 4), {}, "kernel_size must be odd"),
        ("standard", (0, 4), {}, "in_channels must be a positive integer"),
        ("ghost", (4, 4), {"ratio": 1}, "ratio must be at least 2"),
        ("cond", (4, 4), {"experts": 0}, "experts must be a positive integer"),
        ("cond", (4, 6), {"depthwise": True}, "out_channels=6 to be a multiple of in_channels=4"),
        ("spatial", (4, 4), {"mid": 0}, "mid must be a positive number"),
        ("inception", (4, 4), {"kernels": (1, 2)}, "kernels must be odd"),
        ("inception", (4, 4), {"kernels": 3}, "kernels must be a non-empty list"),
        ("inception", (4, 2), {"kernels": (1, 3, 5)}, "3 branches need at least as many out_channels"),
        ("inception", (4, 4), {"reduce": -1.0}, "reduce must be a number >= 0"),
        ("mbconv", (4, 4), {"expand": 0}, "expand must be a positive integer"),
    ],
)
def test_bad_parameters_raise_value_error(kind: str, args: tuple, kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_conv(kind, *args, **kw)


def test_registering_a_kind_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("het")(type("Other", (ConvOp,), {}))


def test_condconv_expert_sum_form_equals_grouped_form() -> None:
    torch.manual_seed(0)
    op = build_conv("cond", 6, 10, 3, 2, experts=3, bias=True)
    torch.nn.init.normal_(op.bias)
    x = torch.randn(4, 6, 9, 9)
    torch.testing.assert_close(op.forward_expert_sum(x), op(x), rtol=1e-5, atol=1e-5)
