"""Forward time of every conv kind against a dense conv of the same shape, measured side by side.

    python benchmarks/ops.py [--batch 8] [--channels 64] [--size 32] [--threads 1]

Floors (issue 2): HetConv >= 20x faster than the per-kernel reference and <= 1.25x a dense conv;
CondConv <= 1.5x a dense conv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_medians  # noqa: E402

from nasconv.ops import build_conv  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, c, s, dev = args.batch, args.channels, args.size, torch.device(args.device)
    x = torch.randn(b, c, s, s, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ops = {
        "standard": build_conv("standard", c, c),
        "group(g4)": build_conv("group", c, c, groups=4),
        "group(g4,shuffle)": build_conv("group", c, c, groups=4, shuffle=True),
        "dsc": build_conv("dsc", c, c),
        "het(p4)": build_conv("het", c, c, p=4),
        "het(p4) dense form": build_conv("het", c, c, p=4),
        "het(p4) split form": build_conv("het", c, c, p=4),
        "ghost(r2)": build_conv("ghost", c, c, ratio=2),
        "cond(e4)": build_conv("cond", c, c, experts=4),
    }
    ops["het(p4) dense form"].split = False
    ops["het(p4) split form"].split = True
    for op in ops.values():
        op.eval().to(dev)
    cond = ops["cond(e4)"]

    def cond_per_sample_loop() -> torch.Tensor:
        alpha = cond.routing(x)
        kernels = (alpha @ cond.weight.view(cond.experts, -1)).view(b, c, c, 3, 3)
        return torch.cat([F.conv2d(x[i : i + 1], kernels[i], None, 1, 1) for i in range(b)])

    def timed(fn):
        def run():
            fn()
            sync()

        return run

    with torch.inference_mode():
        candidates = {name: timed(lambda op=op: op(x)) for name, op in ops.items()}
        candidates["cond per-sample loop"] = timed(cond_per_sample_loop)
        times = interleaved_medians(candidates, rounds=args.rounds)
        het = ops["het(p4)"]
        ref = interleaved_medians(
            {"ref": timed(lambda: het.reference_forward(x)), "het": candidates["het(p4)"]}, rounds=5, warmup=1
        )

    dense = times["standard"]
    macs = {name: op.count_macs((1, c, s, s)) for name, op in ops.items()}
    print(f"batch {b}, {c}->{c} channels, {s}x{s}, kernel 3, {args.threads} thread(s), device {dev}")
    print(f"{'kind':<22}{'ms':>9}{'x standard':>12}{'MACs x std':>12}")
    for name, t in times.items():
        ratio_macs = f"{macs[name] / macs['standard']:.3f}" if name in macs else "-"
        print(f"{name:<22}{t * 1e3:>9.3f}{t / dense:>12.2f}{ratio_macs:>12}")
    print()
    print(f"HetConv vs per-kernel reference: {ref['ref'] / ref['het']:.0f}x faster (floor 20x)")
    print(f"HetConv vs dense conv:           {times['het(p4)'] / dense:.2f}x (floor <= 1.25x)")
    print(f"CondConv vs dense conv:          {times['cond(e4)'] / dense:.2f}x (floor <= 1.5x)")
    print(f"CondConv vs per-sample loop:     {times['cond per-sample loop'] / times['cond(e4)']:.2f}x faster")


if __name__ == "__main__":
    main()
