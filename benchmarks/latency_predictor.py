"""How well does the lookup table predict end-to-end latency?

    python benchmarks/latency_predictor.py [--archs 30] [--backend torch] [--space ...]

Profiles the space's blocks (nasconv profile-device; reuses --table if it exists), then draws
random architectures *not used for calibration*, measures each end to end and compares with the
table's prediction (calibrated) and with the plain sum of blocks. Prints the median and
90th-percentile absolute percentage error and the share within +-10%.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from nasconv.arch import build_model
from nasconv.latency import LatencyTable, measure, percent_errors, profile_device
from nasconv.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "digits.yaml"))
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--table", help="table file to create or reuse (default: a temporary one)")
    args = parser.parse_args()
    space = load_space(args.space)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.table or Path(tmp) / "device.json")
        start = time.perf_counter()
        table = profile_device(
            space, path, threads=args.threads, backend=args.backend, repeats=args.repeats, progress=False
        )
        profile_s = time.perf_counter() - start
        table = LatencyTable.load(path)
    rng = random.Random(12345)  # a different stream from the calibration draw (seed 0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(args.archs * 3)))[: args.archs]
    measured, predicted, raw = [], [], []
    for arch in archs:
        shape = (1, arch.input_channels, arch.input_size, arch.input_size)
        measured.append(
            measure(
                build_model(arch), shape, backend=args.backend, threads=args.threads, warmup=10, repeats=args.repeats
            ).median_ms
        )
        predicted.append(table.predict(arch))
        raw.append(table.raw_sum(arch))
    cal, plain = percent_errors(predicted, measured), percent_errors(raw, measured)
    print(
        f"{Path(args.space).name}: {len(table.entries)} blocks profiled in {profile_s:.0f}s "
        f"({args.backend}, {args.threads} thread, batch 1); {len(archs)} held-out architectures, "
        f"measured {min(measured):.3f}-{max(measured):.3f} ms"
    )
    print(
        f"calibration: latency = {table.scale:.3f} x sum {table.offset_ms:+.3f} ms "
        f"(fitted on {table.calibration['models']} other random architectures)"
    )
    print(f"{'predictor':<22}{'median APE':>12}{'p90 APE':>10}{'within 10%':>12}")
    for name, e in (("calibrated sum", cal), ("plain sum of blocks", plain)):
        print(f"{name:<22}{e['median']:>12.1%}{e['p90']:>10.1%}{e['within_10']:>12.0%}")
    print("target: >= 90% of architectures within +-10%")


if __name__ == "__main__":
    main()
