"""Deformable convolution, v1 (Dai et al., "Deformable Convolutional Networks", ICCV 2017) and, with
``modulated: true``, v2 (Zhu et al., "Deformable ConvNets v2", CVPR 2019). Pure torch.

A k x k convolution whose k^2 taps sample the input at learned fractional offsets: tap t of output
pixel p reads x at p * s - pad + d * t + offset_t(p), bilinearly interpolated, zero outside the image
(torchvision's ``deform_conv2d`` semantics; offsets are ordered (dy, dx) per tap as there, one
offset group). The offsets (2 k^2 channels) come from an ordinary k x k convolution of x with the
same stride, dilation and padding, with a bias, initialised to zero: the operator starts as a
standard convolution. v2 adds a modulation mask, sigmoid of another zero-initialised k x k
convolution (k^2 channels), multiplying each sampled value; it starts at 0.5 everywhere, as in the
paper (the block's BatchNorm absorbs the scale).

The forward works tap by tap: ``grid_sample`` (bilinear, zeros padding, on a channels-last copy of
x, where it runs faster) gives the (B, M, positions) samples of one tap, the mask scales them, and
a batched matmul with that tap's (N, M) weights accumulates them into the output, so every block
of samples is used while it is in cache (one (B, M*k^2, positions) column matrix is k^2 times
larger). Measured alternatives, slower here: all taps in one column matrix, and the bilinear mix as
a weighted ``embedding_bag`` gather of channel vectors (``benchmarks/ops.py`` times both beside this
form; the README's "Measured figures" gives the results).

Params N*M*k^2 + 2k^2 * (M*k^2 + 1) [+ k^2 * (M*k^2 + 1) modulated]. MACs per output pixel, the
rule: N*M*k^2 (the product) + 2k^2 * M*k^2 (offset conv) [+ k^2 * M*k^2 (mask conv)] + 4 * M*k^2
(bilinear interpolation: 4 MACs per sampled value per input channel; the corner weights, computed
once per sample for all channels, are not counted) [+ M*k^2 (modulation)]. torch's aten FLOP
counter sees the convolution and the product but not the sampling, hence ``flops_match_aten``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConvOp, kaiming_, out_size, register


@register("deform")
class DeformableConv(ConvOp):
    order = 100
    short_names = {"modulated": "m"}
    examples = ({"modulated": False}, {"modulated": True})
    flops_match_aten = False  # bilinear sampling and modulation are element-wise: aten counts no FLOPs there

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        taps = kernel_size**2
        offset_channels = 3 * taps if options["modulated"] else 2 * taps
        return out_channels * in_channels * taps + offset_channels * (in_channels * taps + 1)

    @classmethod
    def macs_formula(
        cls, in_channels: int, out_channels: int, kernel_size: int, stride: int, height: int, width: int, **options: Any
    ) -> int:
        m, taps, modulated = in_channels, kernel_size**2, options["modulated"]
        offsets = (3 if modulated else 2) * taps * m * taps
        sampling = (5 if modulated else 4) * m * taps
        return (out_channels * m * taps + offsets + sampling) * out_size(height, stride) * out_size(width, stride)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        *,
        modulated: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        self.modulated = bool(modulated)
        k = self.kernel_size
        self.weight = nn.Parameter(kaiming_(torch.empty(out_channels, in_channels, k, k), in_channels * k * k))
        # 2k^2 offset channels (dy, dx per tap), then k^2 mask channels if modulated; zero: starts as a plain conv
        self.offset_channels = (3 if self.modulated else 2) * k * k
        self.offset_weight = nn.Parameter(torch.zeros(self.offset_channels, in_channels, k, k))
        self.offset_bias = nn.Parameter(torch.zeros(self.offset_channels))

    def macs_per_position(self) -> int:
        m, n, taps = self.in_channels, self.out_channels, self.kernel_size**2
        sampling = (5 if self.modulated else 4) * m * taps
        return n * m * taps + self.offset_channels * m * taps + sampling

    def sampling_macs_per_position(self) -> int:
        """The part of the rule spent on interpolation and modulation (element-wise in the forward)."""
        return (5 if self.modulated else 4) * self.in_channels * self.kernel_size**2

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Offsets (B, 2k^2, oh, ow), (dy, dx) per tap, and the mask (B, k^2, oh, ow) or None."""
        out = self.conv(x, self.offset_weight, bias=self.offset_bias)
        taps = self.kernel_size * self.kernel_size
        if not self.modulated:
            return out, None
        return out[:, : 2 * taps], torch.sigmoid(out[:, 2 * taps :])

    def sample_positions(self, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fractional (row, column) read by each tap at each output pixel, each (B, k^2, oh, ow)."""
        k, s, d, p = self.kernel_size, self.stride, self.dilation, self.padding
        oh, ow = offset.shape[-2], offset.shape[-1]
        tap = torch.arange(k, device=offset.device, dtype=offset.dtype) * d
        rows = (torch.arange(oh, device=offset.device, dtype=offset.dtype) * s - p).view(1, 1, oh, 1)
        cols = (torch.arange(ow, device=offset.device, dtype=offset.dtype) * s - p).view(1, 1, 1, ow)
        # tap (i, j) of the k x k kernel reads row i*d and column j*d (expand, not repeat_interleave:
        # the ONNX exporter of onnxscript < 0.7.2 has no conversion for it)
        rows = rows + tap.view(k, 1).expand(k, k).reshape(1, k * k, 1, 1)
        cols = cols + tap.view(1, k).expand(k, k).reshape(1, k * k, 1, 1)
        return rows + offset[:, 0::2], cols + offset[:, 1::2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, h, w = x.shape
        n, taps = self.out_channels, self.kernel_size * self.kernel_size
        # grid_sample (and the offset conv) run faster on a channels-last input: one copy buys both
        x = x.contiguous(memory_format=torch.channels_last)
        offset, mask = self.offsets_and_mask(x)
        oh, ow = offset.shape[-2], offset.shape[-1]
        rows, cols = self.sample_positions(offset)
        # grid_sample's coordinates, align_corners=False: pixel j of a size-L axis sits at (2j + 1) / L - 1
        grid = torch.stack(((2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1), -1)
        if mask is not None:
            mask = mask.contiguous()
        weight = self.weight.reshape(n, m, taps).permute(2, 0, 1).contiguous()  # (taps, N, M)
        y = torch.zeros(0)
        # tap by tap, so that each (B, M, positions) block of samples is used while it is in cache
        for t in range(taps):
            sampled = F.grid_sample(x, grid[:, t], mode="bilinear", padding_mode="zeros", align_corners=False)
            sampled = sampled.reshape(b, m, oh * ow)
            if mask is not None:
                sampled = sampled * mask[:, t].reshape(b, 1, oh * ow)
            kernel = weight[t].expand(b, n, m)
            y = torch.bmm(kernel, sampled) if t == 0 else y.baddbmm_(kernel, sampled)
        y = y.view(b, n, oh, ow)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tap by tap: the four neighbours of each fractional position, weighted by their bilinear
        coefficients (zero outside the image), times the mask, times that tap's weights."""
        b, m, h, w = x.shape
        k = self.kernel_size
        offset, mask = self.offsets_and_mask(x)
        oh, ow = offset.shape[-2:]
        rows, cols = self.sample_positions(offset)
        flat = x.reshape(b, m, h * w)
        out = x.new_zeros(b, self.out_channels, oh, ow)
        for t in range(k * k):
            y, xx = rows[:, t], cols[:, t]
            y0, x0 = y.floor(), xx.floor()
            sampled = x.new_zeros(b, m, oh, ow)
            for dy in (0, 1):
                for dx in (0, 1):
                    yy, xc = y0 + dy, x0 + dx
                    weight = (1 - (y - yy).abs()) * (1 - (xx - xc).abs())
                    inside = (yy >= 0) & (yy <= h - 1) & (xc >= 0) & (xc <= w - 1)
                    index = (yy.clamp(0, h - 1) * w + xc.clamp(0, w - 1)).long().view(b, 1, oh * ow)
                    value = flat.gather(2, index.expand(b, m, oh * ow)).view(b, m, oh, ow)
                    sampled = sampled + value * (weight * inside).unsqueeze(1)
            if mask is not None:
                sampled = sampled * mask[:, t].unsqueeze(1)
            out = out + torch.einsum("bmhw,nm->bnhw", sampled, self.weight[:, :, t // k, t % k])
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", modulated=True" if self.modulated else "")
