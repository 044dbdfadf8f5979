"""Grouped convolution (AlexNet / ResNeXt), optionally followed by ShuffleNet's channel shuffle.

Zhang et al., "ShuffleNet", CVPR 2018: the shuffle lets the next grouped layer see every group (with
one group it changes nothing: a space does not draw ``shuffle`` there). Params N*(M/g)*k^2; MACs as
many per output pixel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import ConvOp, kaiming_, positive_int, register


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


@register("group")
class GroupConv(ConvOp):
    order = 10
    short_names = {"groups": "g", "shuffle": "s"}
    examples = ({"groups": 4}, {"groups": 2}, {"groups": 2, "shuffle": True})
    standalone = (channel_shuffle,)

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        return out_channels * (in_channels // options["groups"]) * kernel_size**2

    @classmethod
    def inert_options(cls, kernel_size: int, options: Mapping[str, Any]) -> frozenset[str]:
        """Also ``shuffle`` of one group: a shuffle of one group leaves the channels in place."""
        inert = super().inert_options(kernel_size, options)
        return inert | {"shuffle"} if options.get("groups") == 1 else inert

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        *,
        groups: int = 2,
        shuffle: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        self.groups = positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.shuffle = bool(shuffle)
        k = self.kernel_size
        fan_in = in_channels // groups * k * k
        self.weight = nn.Parameter(kaiming_(torch.empty(out_channels, in_channels // groups, k, k), fan_in))

    def macs_per_position(self) -> int:
        return self.out_channels * (self.in_channels // self.groups) * self.kernel_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x, self.weight, groups=self.groups, bias=self.bias)
        return channel_shuffle(y, self.groups) if self.shuffle and self.groups > 1 else y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", groups={self.groups}" + (", shuffle=True" if self.shuffle else "")
