"""Depthwise-separable convolution (Howard et al., "MobileNets", 2017).

Depthwise k x k (carrying stride and dilation) then pointwise 1 x 1, with no norm or activation
between them: the bare factorisation. Params M*k^2 + M*N; MACs as many per output pixel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConvOp, kaiming_, register


@register("dsc")
class DepthwiseSeparableConv(ConvOp):
    order = 20

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        return in_channels * kernel_size**2 + in_channels * out_channels

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
        self.depthwise = nn.Parameter(kaiming_(torch.empty(in_channels, 1, k, k), k * k))
        self.pointwise = nn.Parameter(kaiming_(torch.empty(out_channels, in_channels, 1, 1), in_channels))

    def macs_per_position(self) -> int:
        return self.in_channels * self.kernel_size**2 + self.in_channels * self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x, self.depthwise, groups=self.in_channels)
        return F.conv2d(y, self.pointwise, self.bias)
