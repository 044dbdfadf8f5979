from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nasconv.model.cost import Latency, measure_latency, profile
from nasconv.ops import build_conv


def small_model() -> nn.Module:
    return nn.Sequential(
        build_conv("standard", 3, 8, 3, 2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        build_conv("ghost", 8, 16, 3),
        nn.BatchNorm2d(16),
        nn.Hardswish(),
        build_conv("cond", 16, 16, 3, 2, experts=2),
        build_conv("dsc", 16, 16, 5),
        build_conv("group", 16, 24, 3, groups=4, shuffle=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    )


def test_model_macs_are_the_sum_of_its_layers_and_match_flop_counter() -> None:
    model = small_model()
    prof = profile(model, (3, 16, 16))
    assert [layer.type for layer in prof.layers] == [
        "StandardConv",
        "BatchNorm2d",
        "GhostConv",
        "BatchNorm2d",
        "CondConv",
        "DepthwiseSeparableConv",
        "GroupConv",
        "Linear",
    ]
    assert sum(layer.macs for layer in prof.layers) == prof.macs
    assert sum(layer.params for layer in prof.layers) == prof.params == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, 16, 16))
    assert counter.get_total_flops() == prof.flops


def test_hetconv_model_counts_true_macs_not_dense() -> None:
    model = nn.Sequential(build_conv("het", 8, 8, 3, p=4), nn.BatchNorm2d(8))
    prof = profile(model, (8, 4, 4))
    assert prof.macs == 8 * (2 * 9 + 8 - 2) * 16
    assert prof.params == 8 * (2 * 9 + 8 - 2) + 16


def test_batch_scales_macs() -> None:
    op = build_conv("dsc", 4, 4)
    assert profile(op, (3, 4, 8, 8)).macs == 3 * profile(op, (4, 8, 8)).macs


def test_profile_leaves_model_untouched() -> None:
    model = small_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, (3, 16, 16))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(hasattr(m, "total_ops") for m in model.modules())


def test_measure_latency_restores_threads_and_mode() -> None:
    model = small_model().train()
    threads = torch.get_num_threads()
    lat = measure_latency(model, (3, 16, 16), threads=1, warmup=2, repeats=5)
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.threads == 1 and lat.repeats == 5
    assert torch.get_num_threads() == threads
    assert model.training


def test_latency_is_built_by_keyword() -> None:
    with pytest.raises(TypeError):
        Latency(1.0, 0.5, 2.0, 10, 1, "cpu")  # type: ignore[misc]
    lat = Latency(median_ms=1.0, p10_ms=0.5, p90_ms=2.0, repeats=10, threads=1, device="cpu")
    assert lat.median_ms == 1.0 and not hasattr(lat, "spread_ms")
