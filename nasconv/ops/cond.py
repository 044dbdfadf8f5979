"""CondConv: conditionally parameterised convolution (Yang et al., NeurIPS 2019).

Each sample x gets its own kernel sum_e alpha_e(x) W_e with alpha = sigmoid(Linear(GAP(x))).
The whole batch runs as one grouped convolution (groups = batch, per-sample kernels stacked),
never a Python loop over samples. MACs per sample: routing M*E, kernel mixing E*N*M*k^2 and the
convolution N*M*k^2 per output pixel. Params E*N*M*k^2 + M*E + E. ONNX export uses the
equivalent expert-sum form (see ``forward_expert_sum``).

``depthwise: true`` mixes depthwise expert kernels instead, as EfficientNet-CondConv does in its
inverted residual blocks: each expert is a (N, 1, k, k) depthwise kernel (groups = M, so N must be
a multiple of M: a channel multiplier N / M). It mixes no channels: it belongs in a network whose
other stages do. Params E*N*k^2 + M*E + E; MACs per sample M*E + E*N*k^2 + N*k^2 per output pixel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConvOp, kaiming_, out_size, positive_int, register


@register("cond")
class CondConv(ConvOp):
    order = 50
    short_names = {"experts": "e", "depthwise": "dw"}
    examples = ({"experts": 4}, {"experts": 3}, {"experts": 4, "depthwise": True})

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        e = options["experts"]
        per_expert = out_channels * kernel_size**2 * (1 if options["depthwise"] else in_channels)
        return e * per_expert + in_channels * e + e

    @classmethod
    def macs_formula(
        cls, in_channels: int, out_channels: int, kernel_size: int, stride: int, height: int, width: int, **options: Any
    ) -> int:
        e = options["experts"]
        per_pixel = out_channels * kernel_size**2 * (1 if options["depthwise"] else in_channels)
        return in_channels * e + e * per_pixel + per_pixel * out_size(height, stride) * out_size(width, stride)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        *,
        experts: int = 4,
        depthwise: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        self.experts = positive_int("experts", experts)
        self.depthwise = bool(depthwise)
        if self.depthwise and out_channels % in_channels:
            raise ValueError(
                f"cond depthwise needs out_channels={out_channels} to be a multiple of in_channels={in_channels}"
            )
        k = self.kernel_size
        # input channels each filter sees: all of them, or its own one (depthwise)
        self.fan_channels = 1 if self.depthwise else in_channels
        self.groups = in_channels if self.depthwise else 1
        fan_in = self.fan_channels * k * k
        self.weight = nn.Parameter(kaiming_(torch.empty(experts, out_channels, self.fan_channels, k, k), fan_in))
        self.bias = nn.Parameter(torch.zeros(experts, out_channels)) if bias else None
        self.routing_weight = nn.Parameter(kaiming_(torch.empty(experts, in_channels), in_channels))
        self.routing_bias = nn.Parameter(torch.zeros(experts))

    def macs_per_position(self) -> int:
        return self.out_channels * self.fan_channels * self.kernel_size**2

    def extra_macs(self) -> int:
        e = self.experts
        return self.in_channels * e + e * self.out_channels * self.fan_channels * self.kernel_size**2

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample expert weights alpha, shape (B, E)."""
        return torch.sigmoid(F.linear(x.mean((2, 3)), self.routing_weight, self.routing_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 - TorchScript skips only this exact form
            if torch.onnx.is_in_onnx_export():
                return self.forward_expert_sum(x)
        b, m, h, w = x.shape
        n, k = self.out_channels, self.kernel_size
        alpha = self.routing(x)
        kernels = (alpha @ self.weight.view(self.experts, -1)).view(b * n, self.fan_channels, k, k)
        bias = None if self.bias is None else (alpha @ self.bias).view(-1)
        y = self.conv(x.reshape(1, b * m, h, w), kernels, groups=b * self.groups, bias=bias)
        return y.view(b, n, y.shape[-2], y.shape[-1])

    def forward_expert_sum(self, x: torch.Tensor) -> torch.Tensor:
        """sum_e alpha_e (W_e * x): the same function, with static weights. ONNX's Conv takes its group
        count as a constant, so a graph cannot group by a dynamic batch; exports use this form (E x MACs)."""
        n, e, k = self.out_channels, self.experts, self.kernel_size
        alpha = self.routing(x)
        # filter-major (N, E): a grouped conv keeps each filter's E expert versions in its own group
        weight = self.weight.transpose(0, 1).reshape(n * e, self.fan_channels, k, k)
        y = self.conv(x, weight, groups=self.groups)
        y = (y.unflatten(1, (n, e)) * alpha[:, None, :, None, None]).sum(2)
        return y if self.bias is None else y + (alpha @ self.bias)[:, :, None, None]

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sample by sample: mix that sample's kernel from the experts, convolve."""
        outputs = []
        for i in range(x.shape[0]):
            alpha = self.routing(x[i : i + 1])[0]
            kernel = (alpha.view(-1, 1, 1, 1, 1) * self.weight).sum(0)
            bias = None if self.bias is None else (alpha.view(-1, 1) * self.bias).sum(0)
            outputs.append(self.conv(x[i : i + 1], kernel, groups=self.groups, bias=bias))
        return torch.cat(outputs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", experts={self.experts}" + (", depthwise=True" if self.depthwise else "")
