"""HetConv: heterogeneous kernel-based convolution (Singh et al., CVPR 2019).

Exact to the paper's cyclic arrangement: output filter n has a k x k kernel on input channel i
iff (i - n) mod P == 0 and a 1 x 1 kernel on every other input channel. Only those weights are
parameters (N * ((M/P) k^2 + M - M/P)); nothing dense is stored or counted. MACs: as many per
output pixel (the paper's count, whichever form below runs).

Three forms compute the same function (``form``; ``benchmarks/ops.py`` times each):
- ``dense``: the compact weights are scattered into one dense kernel whose 1 x 1 entries sit at the
  centre tap (a 1 x 1 kernel equals the centre tap at any stride and dilation); one convolution,
  with the MACs of a dense one;
- ``split``: the k x k part as a grouped conv (groups = P) over residue-sorted channels (a copy of
  whole planes in NCHW) plus the 1 x 1 part as a 1 x 1 conv; the grouped output is interleaved
  back while it is added. A third of a dense conv's MACs at P = 4;
- ``sorted``: the split form in channels-last (the sort and un-sort are copies inside each pixel's
  channel vector, the 1 x 1 part a matmul accumulated into the grouped conv's output).
Used (``auto``): split for NCHW inputs, sorted for channels-last ones, where each measured fastest;
the dense form below 16 channels per group, where the grouped conv is slower than the dense one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConvOp, kaiming_, positive_int, register


def het_kxk_mask(in_channels: int, out_channels: int, p: int) -> torch.Tensor:
    """Boolean (N, M): True where filter n has a k x k kernel on input channel i."""
    n = torch.arange(out_channels, device="cpu").view(-1, 1)
    i = torch.arange(in_channels, device="cpu").view(1, -1)
    return (i - n) % p == 0


@register("het")
class HetConv(ConvOp):
    order = 30
    short_names = {"p": "p"}
    examples = ({"p": 4}, {"p": 2})
    standalone = (het_kxk_mask,)
    flops_match_aten = False  # the dense and split forms run more MACs than the paper's count

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        p = options["p"]
        return out_channels * ((in_channels // p) * kernel_size**2 + in_channels - in_channels // p)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        *,
        p: int = 4,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        self.p = positive_int("p", p)
        if in_channels % p:
            raise ValueError(f"het p={p} must divide in_channels={in_channels}")
        m, n, k = in_channels, out_channels, self.kernel_size
        kk_per_filter = m // p
        fan_in = kk_per_filter * k * k + m - kk_per_filter
        self.weight_kxk = nn.Parameter(kaiming_(torch.empty(n, kk_per_filter, k, k), fan_in))
        self.weight_1x1 = nn.Parameter(kaiming_(torch.empty(n, m - kk_per_filter), fan_in))
        mask = het_kxk_mask(m, n, p)
        # channel index of each compact weight, row by row in ascending channel order
        kxk_channels = mask.nonzero()[:, 1].view(n, kk_per_filter)
        one_channels = (~mask).nonzero()[:, 1].view(n, m - kk_per_filter)
        rows = torch.arange(n, device="cpu").view(-1, 1)
        taps = torch.arange(k * k, device="cpu").view(1, 1, -1)
        dense_kxk = ((rows * m + kxk_channels).unsqueeze(-1) * (k * k) + taps).reshape(-1)
        dense_one = ((rows * m + one_channels) * (k * k) + (k * k) // 2).reshape(-1)
        self.register_buffer("_dense_kxk", dense_kxk, persistent=False)
        self.register_buffer("_dense_one", dense_one, persistent=False)
        self.register_buffer("_one_by_one", (rows * m + one_channels).reshape(-1), persistent=False)
        # the same 1 x 1 entries in residue-sorted order: filter n = a*P + r and channel i = q*P + r
        # sit at r*(N/P) + a and r*(M/P) + q (defined for N % P == 0, the sorted forms' condition)
        if n % p == 0:
            sorted_rows = (rows % p) * (n // p) + rows // p
            sorted_one = (sorted_rows * m + (one_channels % p) * (m // p) + one_channels // p).reshape(-1)
        else:
            sorted_one = torch.zeros(0, dtype=torch.long)
        self.register_buffer("_sorted_one", sorted_one, persistent=False)
        self.form = self.default_form(m, n, p)

    #: the forward's ways of computing the same function (benchmarks/ops.py times each)
    FORMS = ("dense", "split", "sorted")

    @staticmethod
    def default_form(in_channels: int, out_channels: int, p: int) -> str:
        """What measured fastest on this CPU (benchmarks/ops.py): the dense form below 16 channels per
        group, else "auto": the split form for an NCHW input, the sorted form for a channels-last one."""
        if out_channels % p or in_channels // p < 16:
            return "dense"
        return "auto"

    def macs_per_position(self) -> int:
        m, k = self.in_channels, self.kernel_size
        return self.out_channels * ((m // self.p) * k * k + m - m // self.p)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense (N, M, k, k) kernel (zeros where the paper has no weight)."""
        n, m, k = self.out_channels, self.in_channels, self.kernel_size
        w = self.weight_kxk.new_zeros(n * m * k * k)
        w = w.index_put((self._dense_kxk,), self.weight_kxk.reshape(-1))  # type: ignore[arg-type]
        w = w.index_put((self._dense_one,), self.weight_1x1.reshape(-1))  # type: ignore[arg-type]
        return w.view(n, m, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        form = self.form
        if form == "auto":
            channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            form = "sorted" if channels_last else "split"
        if form == "sorted":
            return self._forward_sorted(x)
        if form == "split":
            return self._forward_split(x)
        return self.conv(x, self.dense_weight(), bias=self.bias)

    def _sorted_kxk(self) -> torch.Tensor:
        """The k x k kernels with filters residue-sorted (n = a*P + r -> r*(N/P) + a): P groups of N/P
        filters, group r reading the input channels i = r mod P (already in that order in each row)."""
        n, p, k = self.out_channels, self.p, self.kernel_size
        return self.weight_kxk.view(n // p, p, -1, k, k).transpose(0, 1).reshape(n, -1, k, k)

    def _forward_split(self, x: torch.Tensor) -> torch.Tensor:
        """Grouped k x k conv over residue-sorted channels (NCHW) plus a 1 x 1 conv of the unsorted
        input; the grouped output is interleaved back while it is added."""
        b, m, h, w = x.shape
        n, p = self.out_channels, self.p
        xs = x.view(b, m // p, p, h, w).transpose(1, 2).reshape(b, m, h, w)
        g = self.conv(xs, self._sorted_kxk(), groups=p)
        oh, ow = g.shape[-2], g.shape[-1]
        w1 = self.weight_1x1.new_zeros(n * m).index_put((self._one_by_one,), self.weight_1x1.reshape(-1))  # type: ignore[arg-type]
        y = F.conv2d(x, w1.view(n, m, 1, 1), self.bias, self.stride)
        y.view(b, n // p, p, oh, ow).add_(g.view(b, p, n // p, oh, ow).transpose(1, 2))
        return y

    def _forward_sorted(self, x: torch.Tensor) -> torch.Tensor:
        """The split form in channels-last, where oneDNN's grouped conv runs fastest: one copy sorts
        the input's channels by residue into channels-last, the grouped conv and the 1 x 1 part (a
        matmul over the same sorted copy) stay sorted, one copy puts the filters back in order."""
        b, m, h, w = x.shape
        n, p = self.out_channels, self.p
        xs = x.view(b, m // p, p, h, w).permute(0, 3, 4, 2, 1).reshape(b, h, w, m).permute(0, 3, 1, 2)
        g = self.conv(xs, self._sorted_kxk(), groups=p)
        oh, ow = g.shape[-2], g.shape[-1]
        w1 = self.weight_1x1.new_zeros(n * m).index_put((self._sorted_one,), self.weight_1x1.reshape(-1))  # type: ignore[arg-type]
        if self.stride == 1:
            pixels = xs.permute(0, 2, 3, 1).reshape(b * h * w, m)
        else:
            pixels = xs[:, :, :: self.stride, :: self.stride].permute(0, 2, 3, 1).reshape(b * oh * ow, m)
        if g.is_contiguous(memory_format=torch.channels_last):
            # accumulate into the conv's output (no copy; the conv's backward does not need it)
            y = g.permute(0, 2, 3, 1).view(b * oh * ow, n).addmm_(pixels, w1.view(n, m).t())
        else:
            y = torch.addmm(g.permute(0, 2, 3, 1).reshape(b * oh * ow, n), pixels, w1.view(n, m).t())
        if self.bias is not None:
            y = y + self.bias.view(n // p, p).t().reshape(1, n)
        # un-sort the filters, in one copy, into the input's memory format
        y = y.view(b, oh, ow, p, n // p)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return y.transpose(3, 4).reshape(b, oh, ow, n).permute(0, 3, 1, 2)
        return y.permute(0, 4, 3, 1, 2).reshape(b, n, oh, ow)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's description taken literally, one kernel per (filter, input channel) pair.

        Slow by construction: the ground truth that tests and ``benchmarks/ops.py`` compare against.
        """
        mask = het_kxk_mask(self.in_channels, self.out_channels, self.p)
        outputs = []
        for n in range(self.out_channels):
            kxk = iter(self.weight_kxk[n])
            ones = iter(self.weight_1x1[n])
            total = torch.zeros(())
            for i in range(self.in_channels):
                xi = x[:, i : i + 1]
                if mask[n, i]:
                    w = next(kxk).view(1, 1, self.kernel_size, self.kernel_size)
                    total = total + F.conv2d(xi, w, None, self.stride, self.padding, self.dilation)
                else:
                    total = total + F.conv2d(xi, next(ones).view(1, 1, 1, 1), None, self.stride)
            outputs.append(total)
        out = torch.cat(outputs, dim=1)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"
