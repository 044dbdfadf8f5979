"""Standard dense convolution (``nn.Conv2d`` semantics, "same" padding).

Params N*M*k^2; MACs N*M*k^2 per output pixel, ceil(H/s) x ceil(W/s) of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import ConvOp, kaiming_, register


@register("standard")
class StandardConv(ConvOp):
    order = 0

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        return out_channels * in_channels * kernel_size**2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        k = self.kernel_size
        self.weight = nn.Parameter(kaiming_(torch.empty(out_channels, in_channels, k, k), in_channels * k * k))

    def macs_per_position(self) -> int:
        return self.out_channels * self.in_channels * self.kernel_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight, bias=self.bias)
