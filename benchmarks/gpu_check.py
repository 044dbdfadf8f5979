"""The CUDA paths, checked once on a GPU machine (needs torch with CUDA).

    python benchmarks/gpu_check.py               # on the GPU: every check, asserting
    python benchmarks/gpu_check.py --device cpu  # a dry run: the same steps on the CPU, smaller

1. every conv kind, with every example its class declares, runs on the device (NCHW and
   channels-last input) and matches its CPU output (same weights, same input) and, where it has
   one, its slow reference forward; deform v2 also at learned (random) offsets;
2. CondConv on the device: a batch equals its samples one by one, and the ONNX expert-sum form
   equals the grouped form; HetConv in each form equals the per-kernel reference;
3. measure_latency(device=...) gives stable medians (synchronised timing) for a few models;
4. training on the device: device resolution (a Ray-assigned GPU found among the visible ones, an
   id that is not there refused), augmentation equal to the CPU's, a proxy run close to the CPU's,
   bf16 / fp16 / channels_last, the GPU-resident and the streamed (pinned host batches) data paths
   equal, a trial reporting its GPU and its trained weights (in the report before the last), and
   profile-device's synchronised measurement.

The dry run on a CPU exercises every line but the CUDA-only ones (device names, the visible-device
lookup, pinned memory), so that the one run on a GPU machine does not stop on a typo.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from nasconv.errors import NasconvError
from nasconv.model.arch import Arch, StageArch, build_model
from nasconv.model.cost import measure_latency
from nasconv.ops import CONV_KINDS, build_conv, op_class

# every registered kind with every example its class declares (a new kind is checked by being registered)
VARIANTS = [(kind, example) for kind in CONV_KINDS for example in op_class(kind).examples]
PARAMS = {kind: op_class(kind).examples[0] for kind in CONV_KINDS}


@dataclass(frozen=True)
class Scale:
    """How much work each section does: the full check on a GPU, less for a dry run on a CPU."""

    latency_warmup: int = 10
    latency_repeats: int = 50
    latency_kinds: tuple[str, ...] = tuple(CONV_KINDS)
    train_samples: int = 6000
    test_samples: int = 1000


DRY_RUN = Scale(latency_warmup=1, latency_repeats=3, latency_kinds=("standard", "dsc"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default; the check), or cpu for a dry run")
    args = parser.parse_args()
    run_checks(args.device, Scale() if torch.device(args.device).type == "cuda" else DRY_RUN)
    print(f"\nGPU CHECK OK on {args.device}" + ("" if args.device.startswith("cuda") else " (a dry run)"))


def run_checks(device: str, scale: Scale) -> None:
    dev = torch.device(device)
    if dev.type == "cuda":
        assert torch.cuda.is_available(), "no CUDA device"
        print(torch.__version__, torch.cuda.get_device_name(dev))
    else:
        print(torch.__version__, f"dry run on {device}: CPU against CPU")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    operator_checks(dev)
    latency_checks(dev, scale)
    training_checks(device, scale)


def operator_checks(dev: torch.device) -> None:
    """Sections 1 and 2."""
    torch.manual_seed(0)
    x = torch.randn(8, 32, 16, 16)
    worst = 0.0
    for kind, options in VARIANTS:
        for stride, dilation in ((1, 1), (2, 2)):
            try:
                op = build_conv(kind, 32, 64, 3, stride, dilation, **options).eval()
            except (ValueError, NasconvError):
                continue
            with torch.no_grad():
                cpu = op(x)
                gpu = op.to(dev)(x.to(dev)).cpu()
                gpu_cl = op(x.to(dev).contiguous(memory_format=torch.channels_last)).cpu()
            diff = max(float((cpu - gpu).abs().max()), float((cpu - gpu_cl).abs().max()))
            worst = max(worst, diff)
            label = f"{kind} {options}" if options else kind
            print(f"{label:<40} stride {stride} dilation {dilation}: CPU vs {dev} (NCHW, channels-last) {diff:.2e}")
            if op.has_reference():
                with torch.no_grad():
                    ref = float((op(x.to(dev)) - op.reference_forward(x.to(dev))).abs().max())
                print(f"{'':<40} {dev} forward vs its reference {ref:.2e}")
                assert ref < 1e-3, (kind, options, ref)
    assert worst < 1e-3, worst

    deform = build_conv("deform", 32, 48, 3, 1, modulated=True).to(dev).eval()
    with torch.no_grad():
        deform.offset_weight.normal_(0, 0.3)
        deform.offset_bias.normal_(0, 2.0)
        d = float((deform(x.to(dev)) - deform.reference_forward(x.to(dev))).abs().max())
    print(f"deform v2 on {dev} at learned offsets vs tap-by-tap reference: {d:.2e}")
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
    print(f"CondConv on {dev}: batch vs one-by-one {d1:.2e}, grouped vs expert-sum {d2:.2e}")
    assert d1 < 1e-4 and d2 < 1e-4

    het = build_conv("het", 32, 32, 3, 1, p=4).to(dev).eval()
    for form in het.FORMS:
        het.form = form
        with torch.no_grad():
            d = float((het(xg) - het.reference_forward(xg)).abs().max())
        print(f"HetConv on {dev} ({form} form) vs per-kernel reference: {d:.2e}")
        assert d < 1e-4


def _arch(kind: str, **options: object) -> Arch:
    stages = tuple(
        StageArch(kind=kind, channels=channels, depth=2, stride=stride, options=tuple(options.items()))
        for channels, stride in ((32, 1), (64, 2), (128, 2))
    )
    return Arch(input_channels=3, input_size=32, classes=10, stem_channels=32, stages=stages)


def latency_checks(dev: torch.device, scale: Scale) -> None:
    """Section 3."""
    print(
        f"\nlatency on {dev}, batch 1 and 64, 3x32x32 input, median of {scale.latency_repeats} after "
        f"{scale.latency_warmup} warm-up (ms):"
    )
    for kind in scale.latency_kinds:
        model = build_model(_arch(kind, **PARAMS[kind]))
        start = time.perf_counter()
        meds = []
        for batch in (1, 64):
            runs = [
                measure_latency(
                    model, (batch, 3, 32, 32), device=dev, warmup=scale.latency_warmup, repeats=scale.latency_repeats
                ).median_ms
                for _ in range(3)
            ]
            assert all(r > 0 for r in runs), runs
            meds.append(runs)
        assert next(model.parameters()).device.type == "cpu"  # measure_latency leaves the model where it was
        spread = max(max(r) / min(r) for r in meds)
        print(
            f"{kind:<9} b1 {min(meds[0]):7.3f}  b64 {min(meds[1]):7.3f}  (3 repeats agree within "
            f"{(spread - 1) * 100:.1f}%, {time.perf_counter() - start:.1f}s)"
        )


def assigned_gpu_id() -> str:
    """The id Ray would report for this process's first GPU: CUDA_VISIBLE_DEVICES's first entry (Ray
    sets it to the trial's GPUs), else device 0."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[0] if visible else "0"


def training_checks(device: str = "cuda", scale: Scale = Scale()) -> None:
    """Section 4; ``device="cpu"`` runs the same steps without CUDA (a dry run of this script)."""
    from nasconv.model.latency import measure_latency_table
    from nasconv.search import training
    from nasconv.search.data import augment, draw, load_data
    from nasconv.search.evaluation import evaluate_trial
    from nasconv.search.protocol import EvaluationContext, TrialReport, TrialRequest
    from nasconv.search.space import parse_space
    from nasconv.search.training import effective_precision, evaluate, resolve_device, train

    print(f"\ntraining on {device}:")
    dev = torch.device(device)
    gpu_ids = [assigned_gpu_id()] if dev.type == "cuda" else None
    if dev.type == "cuda":
        assert resolve_device("cuda").type == "cuda" and resolve_device("auto").type == "cuda"
        assert resolve_device("auto", gpu_ids=[]).type == "cpu"
        assert gpu_ids is not None
        assigned = resolve_device("auto", gpu_ids=gpu_ids)
        assert assigned == torch.device("cuda", 0), assigned
        try:
            resolve_device("cuda", gpu_ids=["no-such-gpu"])
        except NasconvError as exc:
            refused = str(exc)
        else:
            raise AssertionError("an assigned GPU id that is not visible was accepted")
        print(f"resolve_device: cuda -> {resolve_device('cuda')}, Ray-assigned {gpu_ids} -> {assigned}; {refused}")
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    draws = draw("crop-flip", 64, torch.Generator().manual_seed(0))
    assert draws is not None and torch.equal(augment(x, draws), augment(x.to(dev), draws.to(dev)).cpu())
    print(f"crop-flip on {device} equals the CPU's, sample for sample")

    # cuDNN's deterministic kernels, so that the resident and streamed runs below can be compared
    # exactly (training itself leaves cuDNN's defaults: see nasconv.search.training)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NASCONV_CACHE"] = f"{tmp}/cache"
        rng = np.random.default_rng(0)
        # coarse class templates (8x8-pixel blocks): still recognisable after a crop or a flip
        templates = rng.integers(40, 216, size=(10, 3, 4, 4)).repeat(8, axis=2).repeat(8, axis=3)
        y, y_test = rng.integers(0, 10, scale.train_samples), rng.integers(0, 10, scale.test_samples)

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
        assert data.test is not None
        arch = space.sample(0)
        runs = {}
        for name, where, changes in (
            ("cpu fp32", "cpu", {}),
            (f"{device} fp32", device, {}),
            (f"{device} bf16", device, {"precision": "bf16"}),
            (f"{device} fp16", device, {"precision": "fp16"}),
            (f"{device} fp32 channels_last", device, {"channels_last": True}),
        ):
            settings = spec.training.model_copy(update=changes)
            result, _ = train(arch, data, settings, device=where, test=True)
            runs[name] = result
            assert not result.failed and result.test_accuracy is not None, result
            print(
                f"{name:<24} val {result.accuracy:.4f} test {result.test_accuracy:.4f} loss {result.loss:.4f} "
                f"on {result.device} in {result.precision} ({result.train_seconds:.2f}s, "
                f"{result.epochs * len(data.train) / result.train_seconds:.0f} img/s)"
            )
            assert result.accuracy > 0.5, result
            assert torch.device(result.device).type == torch.device(where).type, result.device
            assert result.precision == effective_precision(settings.precision, torch.device(where)), result.precision
        assert abs(runs["cpu fp32"].accuracy - runs[f"{device} fp32"].accuracy) < 0.05

        resident = runs[f"{device} fp32"]
        fits = training._fits_on
        training._fits_on = lambda x, device: False  # force the streamed path: batches gathered on the host
        try:
            streamed, _ = train(arch, data, spec.training, device=device, test=True)
        finally:
            training._fits_on = fits
        print(
            f"streamed from host memory: val {streamed.accuracy:.4f} loss {streamed.loss:.6f} "
            f"vs resident {resident.accuracy:.4f} loss {resident.loss:.6f}"
        )
        assert abs(streamed.accuracy - resident.accuracy) <= 2 / len(data.val), (streamed, resident)
        assert abs(streamed.loss - resident.loss) < 1e-3 * max(1.0, resident.loss), (streamed, resident)

        reports: list[TrialReport] = []
        context = EvaluationContext(space=spec.model_dump_json(), threads=1, keep_weights=True)
        evaluate_trial(TrialRequest(number=0, arch=arch.to_json()), context, reports.append, gpu_ids=gpu_ids)
        assert reports and not any(r.failed for r in reports), [r.reason for r in reports]
        assert all(r.gpu_ids == tuple(gpu_ids or ()) for r in reports), [r.gpu_ids for r in reports]
        # the weights travel in a report of their own, before the last (which repeats it without them)
        carrying = [r for r in reports if r.weights]
        assert len(carrying) == 1 and reports[-1].weights is None and carrying[0].epoch == spec.training.epochs
        model = build_model(arch)
        model.load_state_dict(torch.load(io.BytesIO(carrying[0].weights or b""), weights_only=True))
        kept_accuracy, _ = evaluate(model.to(dev), data, "val")
        print(
            f"a trial assigned {gpu_ids}: {len(reports)} reports, gpu_ids {reports[-1].gpu_ids}, val "
            f"{reports[-1].accuracy:.4f}; its kept weights load on the CPU and score {kept_accuracy:.4f} on {device}"
        )
        assert abs(kept_accuracy - (reports[-1].accuracy or 0.0)) <= 2 / len(data.val)

        start = time.perf_counter()
        table = measure_latency_table(
            space, f"{tmp}/table.json", device=device, rounds=2, repeats=10, warmup=3, calibrate=3, progress=False
        )
        assert table.settings["device"] == device and table.entries
        print(
            f"profile-device on {device}: {len(table.entries)} blocks on {table.machine.get('gpu', 'the CPU')} "
            f"({time.perf_counter() - start:.1f}s)"
        )


if __name__ == "__main__":
    main()
