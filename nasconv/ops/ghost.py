"""Ghost module (Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020).

A primary k x k convolution (stride, dilation) makes c = ceil(N / ratio) intrinsic maps; a cheap
depthwise dw_kernel x dw_kernel convolution makes (ratio - 1) "ghost" maps from each; the two are
concatenated and the first N channels kept. Bare: the paper's BN/ReLU inside the module belong
to the block builder here. Params M*c*k^2 + c*(ratio-1)*dw_kernel^2; MACs as many per output pixel
(the cheap operation runs on the primary maps, at the output's resolution).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import KERNEL_SIZE, ConvOp, kaiming_, positive_int, register


@register("ghost")
class GhostConv(ConvOp):
    order = 40
    short_names = {"ratio": "r", "dw_kernel": "d"}
    short_omit = {"dw_kernel": 3}
    examples = ({"ratio": 2, "dw_kernel": 3}, {"ratio": 3, "dw_kernel": 5})
    option_rules = {"dw_kernel": KERNEL_SIZE}

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        ratio, d = options["ratio"], options["dw_kernel"]
        c = -(-out_channels // ratio)
        return in_channels * c * kernel_size**2 + c * (ratio - 1) * d * d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        *,
        ratio: int = 2,
        dw_kernel: int = 3,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        self.ratio = positive_int("ratio", ratio)
        if ratio < 2:
            raise ValueError(f"ghost ratio must be at least 2, got {ratio}")
        self.dw_kernel = positive_int("dw_kernel", dw_kernel)
        if dw_kernel % 2 == 0:
            raise ValueError(f"ghost dw_kernel must be odd, got {dw_kernel}")
        k = self.kernel_size
        self.primary_channels = c = -(-out_channels // ratio)
        self.primary = nn.Parameter(kaiming_(torch.empty(c, in_channels, k, k), in_channels * k * k))
        self.cheap = nn.Parameter(kaiming_(torch.empty(c * (ratio - 1), 1, dw_kernel, dw_kernel), dw_kernel**2))

    def macs_per_position(self) -> int:
        c = self.primary_channels
        return self.in_channels * c * self.kernel_size**2 + c * (self.ratio - 1) * self.dw_kernel**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x, self.primary)
        ghosts = F.conv2d(y, self.cheap, None, 1, self.dw_kernel // 2, 1, self.primary_channels)
        out = torch.cat([y, ghosts], dim=1)[:, : self.out_channels]
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ratio={self.ratio}, dw_kernel={self.dw_kernel}"
