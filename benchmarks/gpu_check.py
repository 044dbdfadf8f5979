"""The CUDA paths, checked once on a GPU machine (needs torch with CUDA).

    python benchmarks/gpu_check.py

1. every conv kind, with every example its class declares, runs on CUDA (NCHW and channels-last
   input) and matches its CPU output (same weights, same input) and, where it has one, its slow
   reference forward; deform v2 also at learned (random) offsets;
2. CondConv on CUDA: a batch equals its samples one by one, and the ONNX expert-sum form equals
   the grouped form; HetConv on CUDA equals the per-kernel reference;
3. measure_latency(device="cuda") gives stable medians (synchronised timing) for a few models;
4. training on CUDA: device resolution (a Ray-assigned GPU found among the visible ones),
   augmentation equal to the CPU's, a proxy run close to the CPU's, bf16 / fp16 / channels_last,
   the GPU-resident and the streamed data paths equal, a trial reporting its GPU and its weights,
   and profile-device's synchronised measurement on CUDA.
"""

from __future__ import annotations

import os
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
        summed = cond.forward_expert_sum(xg)
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
    training_checks()
    print("\nGPU CHECK OK")


def training_checks(device: str = "cuda") -> None:
    """Section 4; ``device="cpu"`` runs the same steps without CUDA (a dry run of this script)."""
    import tempfile

    import numpy as np

    from nasconv.model.latency import profile_device
    from nasconv.search import training
    from nasconv.search.data import augment, draw, load_data
    from nasconv.search.evaluation import evaluate_trial
    from nasconv.search.protocol import EvaluationContext, TrialReport, TrialRequest
    from nasconv.search.space import parse_space
    from nasconv.search.training import resolve_device, train

    print(f"\ntraining on {device}:")
    dev = torch.device(device)
    if dev.type == "cuda":
        assert resolve_device("cuda").type == "cuda" and resolve_device("auto").type == "cuda"
        assert resolve_device("auto", gpu_ids=[]).type == "cpu"
        print(
            f"resolve_device: cuda -> {resolve_device('cuda')}, "
            f"Ray-assigned ['0'] -> {resolve_device('auto', gpu_ids=['0'])}"
        )
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    draws = draw("crop-flip", 64, torch.Generator().manual_seed(0))
    assert draws is not None and torch.equal(augment(x, draws), augment(x.to(dev), draws.to(dev)).cpu())
    print(f"crop-flip on {device} equals the CPU's, sample for sample")

    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NASCONV_CACHE"] = f"{tmp}/cache"
        rng = np.random.default_rng(0)
        # coarse class templates (8x8-pixel blocks): still recognisable after a crop or a flip
        templates = rng.integers(40, 216, size=(10, 3, 4, 4)).repeat(8, axis=2).repeat(8, axis=3)
        y, y_test = rng.integers(0, 10, 6000), rng.integers(0, 10, 1000)

        def noisy(labels: np.ndarray) -> np.ndarray:
            return np.clip(templates[labels] + rng.integers(-60, 61, (len(labels), 3, 32, 32)), 0, 255)

        np.savez(f"{tmp}/d.npz", x=noisy(y).astype(np.uint8), y=y, x_test=noisy(y_test).astype(np.uint8), y_test=y_test)
        space = parse_space(
            {
                "name": "gpu-check",
                "input": {"channels": 3, "size": 32},
                "classes": 10,
                "dataset": {"name": "npz", "path": f"{tmp}/d.npz"},
                "stem": {"channels": [16]},
                "stages": [
                    {"stride": 2, "channels": [32], "conv": {"dsc": {"kernel": 3}}},
                    {"stride": 2, "channels": [64], "conv": {"ghost": {"kernel": 3}}},
                ],
                "training": {"epochs": 2, "batch_size": 128, "lr": 0.05, "augment": "crop-flip"},
            }
        )
        spec = space.spec
        data = load_data(spec.dataset, 10, 3, 32, spec.training.val_fraction, spec.training.seed)
        arch = space.sample(0)
        runs = {}
        for name, where, changes in (
            ("cpu fp32", "cpu", {}),
            (f"{device} fp32", device, {}),
            (f"{device} bf16", device, {"precision": "bf16"}),
            (f"{device} fp16", device, {"precision": "fp16"}),
            (f"{device} fp32 channels_last", device, {"channels_last": True}),
        ):
            result, _ = train(arch, data, spec.training.model_copy(update=changes), device=where, test=True)
            runs[name] = result
            print(
                f"{name:<24} val {result.accuracy:.4f} test {result.test_accuracy:.4f} loss {result.loss:.4f} "
                f"({result.train_seconds:.2f}s, {2 * len(data.train) / result.train_seconds:.0f} img/s)"
            )
            assert not result.failed and result.accuracy > 0.5, result
        assert abs(runs["cpu fp32"].accuracy - runs[f"{device} fp32"].accuracy) < 0.05
        resident = runs[f"{device} fp32"]
        training.RESIDENT_FRACTION = 0.0  # force the streamed path: pinned host batches
        try:
            streamed, _ = train(arch, data, spec.training, device=device, test=True)
        finally:
            training.RESIDENT_FRACTION = 0.25
        print(
            f"streamed from host memory: val {streamed.accuracy:.4f} loss {streamed.loss:.6f} "
            f"vs resident {resident.loss:.6f}"
        )
        assert streamed.accuracy == resident.accuracy and abs(streamed.loss - resident.loss) < 1e-5

        reports: list[TrialReport] = []
        context = EvaluationContext(space=spec.model_dump_json(), threads=1, keep_weights=True)
        gpu_ids = ["0"] if dev.type == "cuda" else None
        evaluate_trial(TrialRequest(number=0, arch=arch.to_json()), context, reports.append, gpu_ids=gpu_ids)
        assert (
            reports and not reports[-1].failed and reports[-1].gpu_ids == tuple(gpu_ids or ()) and reports[-1].weights
        )
        print(f"a trial assigned {gpu_ids}: {len(reports)} reports, gpu_ids {reports[-1].gpu_ids}, weights kept")

        start = time.perf_counter()
        table = profile_device(
            space, f"{tmp}/table.json", device=device, rounds=2, repeats=10, warmup=3, calibrate=3, progress=False
        )
        assert table.settings["device"] == device and table.entries
        print(
            f"profile-device on {device}: {len(table.entries)} blocks on {table.machine.get('gpu', 'the CPU')} "
            f"({time.perf_counter() - start:.1f}s)"
        )


if __name__ == "__main__":
    main()
