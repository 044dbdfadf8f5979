"""Spatially separable convolution: a k x 1 convolution, then a 1 x k convolution.

Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016, section 3.2
(factorisation into asymmetric convolutions); the survey's "spatially separable convolution".
The k x 1 convolution maps the M input channels to c = max(1, round(mid * N)) channels (Python's
round, halves to even: mid 0.5 of N = 5 is 2, of N = 7 is 4) and carries
the vertical half of the geometry (stride (s, 1), dilation (d, 1)); the 1 x k convolution maps c to
N channels and carries the horizontal half (stride (1, s), dilation (1, d)). Together they cover
the k x k window of a k x k convolution at stride s and dilation d, with a kernel of rank c per
(output, input) channel pair. Bare: nothing between the two.

Params c*M*k + N*c*k. MACs per sample c*M*k at ceil(H/s) x W (the first convolution keeps every
column the second one reads) plus N*c*k at ceil(H/s) x ceil(W/s).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConvOp, kaiming_, out_size, register


def mid_channels(out_channels: int, mid: float) -> int:
    """Channels between the two halves of a separable pair: ``mid`` x out_channels, rounded half to
    even (Python's ``round``), at least 1."""
    return max(1, round(mid * out_channels))


@register("spatial")
class SpatialSeparableConv(ConvOp):
    order = 60
    short_names = {"mid": "m"}
    short_omit = {"mid": 1.0}
    examples = ({"mid": 1.0}, {"mid": 0.5})
    standalone = (mid_channels,)

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        c = mid_channels(out_channels, options["mid"])
        return c * in_channels * kernel_size + out_channels * c * kernel_size

    @classmethod
    def macs_formula(
        cls, in_channels: int, out_channels: int, kernel_size: int, stride: int, height: int, width: int, **options: Any
    ) -> int:
        c, k, oh = mid_channels(out_channels, options["mid"]), kernel_size, out_size(height, stride)
        return c * in_channels * k * oh * width + out_channels * c * k * oh * out_size(width, stride)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        *,
        mid: float = 1.0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        if isinstance(mid, bool) or not isinstance(mid, (int, float)) or not mid > 0:
            raise ValueError(f"spatial mid must be a positive number, got {mid!r}")
        self.mid = float(mid)
        self.mid_channels = c = mid_channels(out_channels, self.mid)
        k = self.kernel_size
        self.vertical = nn.Parameter(kaiming_(torch.empty(c, in_channels, k, 1), in_channels * k))
        self.horizontal = nn.Parameter(kaiming_(torch.empty(out_channels, c, 1, k), c * k))

    def macs_per_sample(self, height: int, width: int) -> int:
        out_h, out_w = self.output_size(height, width)
        k, c = self.kernel_size, self.mid_channels
        return c * self.in_channels * k * out_h * width + self.out_channels * c * k * out_h * out_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, d, p = self.stride, self.dilation, self.padding
        y = F.conv2d(x, self.vertical, None, (s, 1), (p, 0), (d, 1))
        return F.conv2d(y, self.horizontal, self.bias, (1, s), (0, p), (1, d))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One k x k convolution with the composed kernel K[n, m, i, j] = sum_c H[n, c, j] V[c, m, i]."""
        kernel = torch.einsum("ncj,cmi->nmij", self.horizontal[:, :, 0], self.vertical[:, :, :, 0])
        return self.conv(x, kernel, bias=self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mid_channels={self.mid_channels}"
