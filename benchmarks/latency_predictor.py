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

from nasconv.model.arch import build_model
from nasconv.model.latency import (
    LatencyTable,
    arch_parts,
    best_of_rounds,
    build_part,
    measure_latency_table,
    percent_errors,
)
from nasconv.search.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "digits.yaml"))
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5, help="passes over all models; each keeps its best")
    parser.add_argument("--table", help="table file to create or reuse (default: a temporary one)")
    args = parser.parse_args()
    space = load_space(args.space)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.table or Path(tmp) / "device.json")
        start = time.perf_counter()
        table = measure_latency_table(
            space,
            path,
            threads=args.threads,
            backend=args.backend,
            repeats=args.repeats,
            rounds=args.rounds,
            progress=False,
        )
        profile_s = time.perf_counter() - start
        table = LatencyTable.load(path)
    rng = random.Random(12345)  # a different stream from the calibration draw (seed 0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(args.archs * 3)))[: args.archs]
    models = {str(i): (build_model(a), (1, a.input_channels, a.input_size, a.input_size)) for i, a in enumerate(archs)}
    first = best_of_rounds(
        models, rounds=args.rounds, backend=args.backend, threads=args.threads, warmup=10, repeats=args.repeats
    )
    measured = [first[str(i)].median_ms for i in range(len(archs))]
    predicted = [table.predict(a) for a in archs]
    raw = [table.raw_sum(a) for a in archs]
    cal, plain = percent_errors(predicted, measured), percent_errors(raw, measured)

    # The same comparison with the drift of a shared machine taken out: each model is measured in
    # the same passes as its own blocks (blocks, then the model, arch by arch, best of --rounds),
    # and predicted from those fresh block figures with the table's calibration.
    items: dict = {}
    for i, arch in enumerate(archs):
        for key in arch_parts(arch):
            if f"part {key}" not in items:
                module, shape = build_part(key)
                items[f"part {key}"] = (module, (1, *shape))
        items[f"model {i}"] = models[str(i)]
    best = best_of_rounds(
        items, rounds=args.rounds, backend=args.backend, threads=args.threads, warmup=10, repeats=args.repeats
    )
    fresh = LatencyTable(
        table.settings,
        table.machine,
        {k[5:]: {"median_ms": m.median_ms} for k, m in best.items() if k.startswith("part ")},
        table.scales,
        table.offset_ms,
    )
    same_window = percent_errors(
        [fresh.predict(a) for a in archs], [best[f"model {i}"].median_ms for i in range(len(archs))]
    )
    drift = percent_errors(measured, [best[f"model {i}"].median_ms for i in range(len(archs))])
    print(
        f"{Path(args.space).name}: {len(table.entries)} blocks profiled in {profile_s:.0f}s "
        f"({args.backend}, {args.threads} thread, batch 1); {len(archs)} held-out architectures, "
        f"measured {min(measured):.3f}-{max(measured):.3f} ms"
    )
    print(
        "calibration: per-type scales "
        + ", ".join(f"{t} {v:.2f}" for t, v in sorted((table.scales or {}).items()))
        + f", offset {table.offset_ms:+.3f} ms "
        f"(fitted on {table.calibration['models']} other random architectures)"
    )
    print(f"{'predictor':<24}{'median APE':>12}{'p90 APE':>10}{'within 10%':>12}")
    for name, e in (
        ("calibrated sum", cal),
        ("plain sum of blocks", plain),
        ("same-window blocks", same_window),
        ("the model vs itself", drift),
    ):
        print(f"{name:<24}{e['median']:>12.1%}{e['p90']:>10.1%}{e['within_10']:>12.0%}")
    print("target: >= 90% of architectures within +-10%")
    print("same-window: calibrated prediction from blocks measured in the same passes as the model;")
    print("model vs itself: the first end-to-end measurement against the second, minutes apart (drift)")


if __name__ == "__main__":
    main()
