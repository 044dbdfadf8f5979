"""Inception block (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015), as one operator.

Parallel branches, one per entry of ``kernels`` (default 1 x 1, 3 x 3, 5 x 5), each convolving the
input with its own kernel at the op's stride and dilation; their outputs are concatenated in the
order of ``kernels``. The N output channels are split between the branches as evenly as possible,
the first N mod B branches taking one more. The stage's own ``kernel`` is ignored
(``uses_stage_kernel = False``): the branches' kernels are the ``kernels`` option, so a space has no
``kernel`` for this kind, and dilation is a choice only where a branch kernel is larger than 1.

``reduce`` > 0 gives every branch with k > 1 GoogLeNet's 1 x 1 reduction: M -> r_b channels,
r_b = max(1, round(reduce * n_b)) for a branch of n_b outputs, rounded half to even (Python's
``round``: 0.5 of 5 channels is 2) (GoogLeNet's 3a uses 0.75 and 0.5),
followed by a ReLU as in the paper (without it a reduction would only be a low-rank factorisation
of the branch's kernel), then the k x k convolution r_b -> n_b. No BatchNorm inside: the operator is
a leaf; the block normalises the concatenation. GoogLeNet's pooling branch is not included.

Params, per branch b with kernel k_b: M*n_b if k_b = 1; M*n_b*k_b^2 without reduction;
M*r_b + r_b*n_b*k_b^2 with one. MACs per sample: each k x k (and 1 x 1 branch) convolution's
params times ceil(H/s) x ceil(W/s), each reduction's M*r_b times H x W (a reduction feeds a strided
k x k convolution, so it runs at the input's resolution).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import KERNEL_SIZE, ConvOp, kaiming_, out_size, positive_int, register


def inception_branches(
    in_channels: int, out_channels: int, kernels: Sequence[int], reduce: float
) -> list[tuple[int, int, int]]:
    """(kernel, output channels, reduction channels or 0) of each branch; reductions are rounded
    half to even (Python's ``round``)."""
    count = len(kernels)
    outs = [out_channels // count + (1 if b < out_channels % count else 0) for b in range(count)]
    return [(k, n, max(1, round(reduce * n)) if reduce > 0 and k > 1 else 0) for k, n in zip(kernels, outs)]


@register("inception")
class InceptionConv(ConvOp):
    order = 80
    short_names = {"kernels": "b", "reduce": "r"}
    short_omit = {"kernels": (1, 3, 5), "reduce": 0.0}
    examples = ({"kernels": (1, 3, 5)}, {"kernels": (1, 3, 5), "reduce": 0.5}, {"kernels": (3, 5), "reduce": 0.75})
    standalone = (inception_branches,)
    uses_stage_kernel = False
    option_rules = {"kernels": KERNEL_SIZE}

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        total = 0
        for k, n, r in inception_branches(in_channels, out_channels, options["kernels"], options["reduce"]):
            total += in_channels * r + r * n * k * k if r else in_channels * n * k * k
        return total

    @classmethod
    def macs_formula(
        cls, in_channels: int, out_channels: int, kernel_size: int, stride: int, height: int, width: int, **options: Any
    ) -> int:
        positions = out_size(height, stride) * out_size(width, stride)
        total = 0
        for k, n, r in inception_branches(in_channels, out_channels, options["kernels"], options["reduce"]):
            total += in_channels * r * height * width + (r or in_channels) * n * k * k * positions
        return total

    @classmethod
    def inert_options(cls, kernel_size: int, options: Mapping[str, Any]) -> frozenset[str]:
        """Dilation and ``reduce`` when every branch is 1 x 1 (reductions are for k > 1 branches)."""
        kernels = options.get("kernels")
        if kernels is not None and all(k == 1 for k in kernels):
            return frozenset({"dilation", "reduce"})
        return frozenset()

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        *,
        kernels: tuple[int, ...] = (1, 3, 5),
        reduce: float = 0.0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        if isinstance(kernels, int) or not isinstance(kernels, (list, tuple)) or not kernels:
            raise ValueError(f"inception kernels must be a non-empty list of odd kernel sizes, got {kernels!r}")
        for k in kernels:
            if positive_int("inception kernel", k) % 2 == 0:
                raise ValueError(f"inception kernels must be odd for 'same' padding, got {k}")
        if out_channels < len(kernels):
            raise ValueError(
                f"inception: {len(kernels)} branches need at least as many out_channels, got {out_channels}"
            )
        if isinstance(reduce, bool) or not isinstance(reduce, (int, float)) or reduce < 0:
            raise ValueError(f"inception reduce must be a number >= 0 (0 = no 1x1 reduction), got {reduce!r}")
        self.kernels = [int(k) for k in kernels]
        self.reduce = float(reduce)
        m = in_channels
        branches = inception_branches(m, out_channels, self.kernels, self.reduce)
        self.branch_out = [n for _, n, _ in branches]
        self.branch_reduce = [r for _, _, r in branches]
        # every 1 x 1 map of x in one matrix: first the 1 x 1 branches' outputs, then the reductions
        self.pointwise_rows = [n for k, n, _ in branches if k == 1] + [r for k, _, r in branches if k > 1 and r]
        self.direct_rows = sum(n for k, n, _ in branches if k == 1)
        rows = sum(self.pointwise_rows)
        # the k x k kernels of all branches with k > 1, flattened into one parameter (a leaf module)
        self.spatial_sizes = [(r or m) * n * k * k if k > 1 else 0 for k, n, r in branches]
        total = sum(self.spatial_sizes)
        self.pointwise = nn.Parameter(torch.empty(rows, m)) if rows else None
        self.spatial = nn.Parameter(torch.empty(total)) if total else None
        row, offset = 0, 0
        for k, n, r in branches:
            if k == 1 or r:
                assert self.pointwise is not None
                kaiming_(self.pointwise.data[row : row + (n if k == 1 else r)], m)
                row += n if k == 1 else r
            if k > 1:
                assert self.spatial is not None
                size = (r or m) * n * k * k
                kaiming_(self.spatial.data[offset : offset + size], (r or m) * k * k)
                offset += size

    def branch_weights(self, branch: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Branch ``branch``'s (reduction (r, M, 1, 1) or None, convolution (n, r or M, k, k)) weights."""
        m, k = self.in_channels, self.kernels[branch]
        n, r = self.branch_out[branch], self.branch_reduce[branch]
        if k == 1:
            assert self.pointwise is not None
            row = sum(self.branch_out[b] for b in range(branch) if self.kernels[b] == 1)
            return None, self.pointwise[row : row + n].view(n, m, 1, 1)
        assert self.spatial is not None
        offset = sum(self.spatial_sizes[:branch])
        kernel = self.spatial[offset : offset + self.spatial_sizes[branch]].view(n, r or m, k, k)
        if not r:
            return None, kernel
        assert self.pointwise is not None
        row = self.direct_rows + sum(self.branch_reduce[b] for b in range(branch) if self.kernels[b] > 1)
        return self.pointwise[row : row + r].view(r, m, 1, 1), kernel

    def macs_per_sample(self, height: int, width: int) -> int:
        out_h, out_w = self.output_size(height, width)
        m, total = self.in_channels, 0
        for k, n, r in zip(self.kernels, self.branch_out, self.branch_reduce):
            total += (r or m) * n * k * k * out_h * out_w + m * r * height * width
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, s, d = self.in_channels, self.stride, self.dilation
        direct = torch.zeros(0)
        reduced = torch.zeros(0)
        pointwise = self.pointwise
        if pointwise is not None:
            # every 1 x 1 map of x in one convolution where they share a resolution (stride 1)
            n1 = self.direct_rows
            if s == 1:
                both = F.conv2d(x, pointwise.view(-1, m, 1, 1))
                direct, reduced = both[:, :n1], both[:, n1:]
            else:
                if n1 > 0:
                    direct = F.conv2d(x, pointwise[:n1].view(-1, m, 1, 1), None, s)
                if pointwise.shape[0] > n1:
                    reduced = F.conv2d(x, pointwise[n1:].view(-1, m, 1, 1))
            reduced = F.relu(reduced)
        outputs: list[torch.Tensor] = []
        row_direct, row_reduced, offset = 0, 0, 0
        for k, n, r, size in zip(self.kernels, self.branch_out, self.branch_reduce, self.spatial_sizes):
            if k == 1:
                outputs.append(direct[:, row_direct : row_direct + n])
                row_direct += n
                continue
            spatial = self.spatial
            assert spatial is not None
            kernel = spatial[offset : offset + size].view(n, size // (n * k * k), k, k)
            offset += size
            source = x
            if r:
                source = reduced[:, row_reduced : row_reduced + r]
                row_reduced += r
            outputs.append(F.conv2d(source, kernel, None, s, d * (k - 1) // 2, d))
        y = torch.cat(outputs, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each branch on its own, literally: [1 x 1 reduction, ReLU,] k x k convolution; concatenated."""
        outputs = []
        for b, k in enumerate(self.kernels):
            reduction, kernel = self.branch_weights(b)
            source = x if reduction is None else torch.relu(F.conv2d(x, reduction))
            padding = self.dilation * (k - 1) // 2
            outputs.append(F.conv2d(source, kernel, None, self.stride, padding, self.dilation if k > 1 else 1))
        y = torch.cat(outputs, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernels={self.kernels}, branch_out={self.branch_out}, reduce={self.reduce:g}"
