"""The CUDA paths, checked once on a GPU machine (needs torch with CUDA; no thop/optuna/ray).

    python benchmarks/gpu_check.py

1. every conv kind, with every example its class declares, runs on CUDA (NCHW and channels-last
   input) and matches its CPU output (same weights, same input) and, where it has one, its slow
   reference forward; deform v2 also at learned (random) offsets;
2. CondConv on CUDA: a batch equals its samples one by one, and the ONNX expert-sum form equals
   the grouped form; HetConv on CUDA equals the per-kernel reference;
3. measure_latency(device="cuda") gives stable medians (synchronised timing) for a few models.
"""

from __future__ import annotations

import time

import torch

from nasconv.model.arch import Arch, StageArch, build_model
from nasconv.model.cost import measure_latency
from nasconv.ops import CONV_KINDS, build_conv, op_class

# every registered kind with every example its class declares (a new kind is checked by being registered)
VARIANTS = [(kind, example) for kind in CONV_KINDS for example in op_class(kind).examples]
PARAMS = {kind: op_class(kind).examples[0] for kind in CONV_KINDS}


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    dev = torch.device("cuda")
    print(torch.__version__, torch.cuda.get_device_name(0))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    x = torch.randn(8, 32, 16, 16)
    worst = 0.0
    for kind, options in VARIANTS:
        for stride, dilation in ((1, 1), (2, 2)):
            try:
                op = build_conv(kind, 32, 64, 3, stride, dilation, **options).eval()
            except ValueError:
                continue
            with torch.no_grad():
                cpu = op(x)
                gpu = op.to(dev)(x.to(dev)).cpu()
                gpu_cl = op(x.to(dev).contiguous(memory_format=torch.channels_last)).cpu()
            diff = max(float((cpu - gpu).abs().max()), float((cpu - gpu_cl).abs().max()))
            worst = max(worst, diff)
            label = f"{kind} {options}" if options else kind
            print(f"{label:<40} stride {stride} dilation {dilation}: CPU vs CUDA (NCHW, channels-last) {diff:.2e}")
            if op.has_reference():
                with torch.no_grad():
                    ref = float((op(x.to(dev)) - op.reference_forward(x.to(dev))).abs().max())
                print(f"{'':<40} CUDA forward vs its reference {ref:.2e}")
                assert ref < 1e-3, (kind, options, ref)
    assert worst < 1e-3, worst

    deform = build_conv("deform", 32, 48, 3, 1, modulated=True).to(dev).eval()
    with torch.no_grad():
        deform.offset_weight.normal_(0, 0.3)
        deform.offset_bias.normal_(0, 2.0)
        d = float((deform(x.to(dev)) - deform.reference_forward(x.to(dev))).abs().max())
    print(f"deform v2 CUDA at learned offsets vs tap-by-tap reference: {d:.2e}")
    assert d < 1e-3

    cond = build_conv("cond", 32, 48, 3, 1, experts=4, bias=True).to(dev).eval()
    torch.nn.init.normal_(cond.bias)
    xg = torch.randn(16, 32, 16, 16, device=dev)
    with torch.no_grad():
        batched = cond(xg)
        singles = torch.cat([cond(xg[i : i + 1]) for i in range(16)])
        summed = cond._forward_expert_sum(xg)
    d1 = float((batched - singles).abs().max())
    d2 = float((batched - summed).abs().max())
    print(f"CondConv CUDA: batch vs one-by-one {d1:.2e}, grouped vs expert-sum {d2:.2e}")
    assert d1 < 1e-4 and d2 < 1e-4

    het = build_conv("het", 32, 32, 3, 1, p=4).to(dev).eval()
    for form in het.FORMS:
        het.form = form
        with torch.no_grad():
            d = float((het(xg) - het.reference_forward(xg)).abs().max())
        print(f"HetConv CUDA ({form} form) vs per-kernel reference: {d:.2e}")
        assert d < 1e-4

    def arch(kind: str, **options: int) -> Arch:
        stages = (
            StageArch(kind=kind, channels=32, depth=2, stride=1, options=tuple(options.items())),
            StageArch(kind=kind, channels=64, depth=2, stride=2, options=tuple(options.items())),
            StageArch(kind=kind, channels=128, depth=2, stride=2, options=tuple(options.items())),
        )
        return Arch(input_channels=3, input_size=32, classes=10, stem_channels=32, stages=stages)

    print("\nlatency on CUDA, batch 1 and 64, 3x32x32 input, median of 50 after 10 warm-up (ms):")
    for kind in CONV_KINDS:
        model = build_model(arch(kind, **PARAMS[kind]))
        start = time.perf_counter()
        meds = []
        for batch in (1, 64):
            runs = [
                measure_latency(model, (batch, 3, 32, 32), device="cuda", warmup=10, repeats=50).median_ms
                for _ in range(3)
            ]
            meds.append(runs)
        spread = max(max(r) / min(r) for r in meds)
        print(
            f"{kind:<9} b1 {min(meds[0]):7.3f}  b64 {min(meds[1]):7.3f}  (3 repeats agree within "
            f"{(spread - 1) * 100:.1f}%, {time.perf_counter() - start:.1f}s)"
        )
    print("\nGPU CHECK OK")


if __name__ == "__main__":
    main()
