"""Inverted residual block (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018), as one operator.

1 x 1 expansion M -> h = expand * M channels, ReLU6, depthwise k x k on h channels (stride,
dilation), ReLU6, linear 1 x 1 projection h -> N. With ``expand: 1`` there is no expansion
convolution (MobileNetV2's first bottleneck): depthwise, ReLU6, projection.

What differs from the paper, and why: the operator is a leaf with no BatchNorm inside (the paper
has one after each of the three convolutions); the ReLU6s stay, because without them expansion and
projection would collapse into one linear map and ``expand`` would change nothing a dense conv could
not express. The block builder puts BatchNorm and the stage's activation after the projection, and
the residual connection where stride is 1 and in == out channels, as for every kind; the paper's
projection is linear, so a stage of mbconv is closest to it with that activation last.

Params (expand > 1) M*h + h*k^2 + h*N, (expand = 1) M*k^2 + M*N. MACs per sample: M*h at H x W
(the expansion runs before the strided depthwise convolution), h*k^2 + h*N at ceil(H/s) x ceil(W/s).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConvOp, kaiming_, out_size, positive_int, register


@register("mbconv")
class InvertedResidual(ConvOp):
    order = 90
    short_names = {"expand": "t"}
    examples = ({"expand": 6}, {"expand": 1}, {"expand": 3})

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        t = options["expand"]
        h = t * in_channels
        return (in_channels * h if t > 1 else 0) + h * kernel_size**2 + h * out_channels

    @classmethod
    def macs_formula(
        cls, in_channels: int, out_channels: int, kernel_size: int, stride: int, height: int, width: int, **options: Any
    ) -> int:
        t = options["expand"]
        h = t * in_channels
        expansion = in_channels * h * height * width if t > 1 else 0
        return expansion + (h * kernel_size**2 + h * out_channels) * out_size(height, stride) * out_size(width, stride)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        *,
        expand: int = 6,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        self.expand = positive_int("expand", expand)
        self.hidden = h = expand * in_channels
        k = self.kernel_size
        self.expansion = nn.Parameter(kaiming_(torch.empty(h, in_channels, 1, 1), in_channels)) if expand > 1 else None
        self.depthwise = nn.Parameter(kaiming_(torch.empty(h, 1, k, k), k * k))
        self.projection = nn.Parameter(kaiming_(torch.empty(out_channels, h, 1, 1), h))

    def macs_per_sample(self, height: int, width: int) -> int:
        out_h, out_w = self.output_size(height, width)
        h, k = self.hidden, self.kernel_size
        expansion = self.in_channels * h * height * width if self.expansion is not None else 0
        return expansion + (h * k * k + h * self.out_channels) * out_h * out_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden maps live in channels-last, where the depthwise conv runs several times faster
        than in NCHW; both 1 x 1 convs are batched matmuls that read and write either layout in
        place, so an NCHW input costs no layout copies."""
        b, m, h, w = x.shape
        hidden, n = self.hidden, self.out_channels
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        expansion = self.expansion
        if expansion is None:
            e = x if channels_last else x.contiguous(memory_format=torch.channels_last)
        else:
            # reshape, not view: a sliced or transposed input cannot be viewed as (b, m, h*w)
            pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, m) if channels_last else x.reshape(b, m, h * w).mT
            e = torch.bmm(pixels, expansion.view(hidden, m).t().expand(b, m, hidden))
            e = F.relu6(e, inplace=True).view(b, h, w, hidden).permute(0, 3, 1, 2)
        y = F.relu6(self.conv(e, self.depthwise, groups=hidden), inplace=True)
        oh, ow = y.shape[-2], y.shape[-1]
        rows = y.permute(0, 2, 3, 1).reshape(b, oh * ow, hidden)  # a view: the conv kept channels-last
        projection = self.projection.view(n, hidden)
        if channels_last:
            out = F.linear(rows, projection, self.bias).view(b, oh, ow, n).permute(0, 3, 1, 2)
            return out
        out = torch.bmm(projection.expand(b, n, hidden), rows.mT).view(b, n, oh, ow)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Channel by channel: every hidden channel is a weighted sum of the inputs, clamped to [0, 6],
        filtered on its own, clamped again; each output is a weighted sum of the hidden channels."""
        h, k = self.hidden, self.kernel_size
        hidden = []
        for c in range(h):
            if self.expansion is None:
                e = x[:, c : c + 1]
            else:
                e = (x * self.expansion[c].view(1, -1, 1, 1)).sum(1, keepdim=True).clamp(0, 6)
            w = self.depthwise[c].view(1, 1, k, k)
            hidden.append(F.conv2d(e, w, None, self.stride, self.padding, self.dilation).clamp(0, 6))
        y = torch.cat(hidden, 1)
        out = (y.unsqueeze(1) * self.projection.view(1, self.out_channels, h, 1, 1)).sum(2)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", expand={self.expand}"
