"""Every conv kind against a dense conv of the same shape, measured side by side: MACs and time as
ratios of the dense conv's, and the efficiency (MAC ratio / time ratio: 1.0 runs its MACs as fast as
the dense conv runs its own).

    python benchmarks/ops.py [--batch 8] [--channels 64] [--size 32] [--threads 1] [--channels-last]
                             [--rounds 15] [--inner 5] [--clock cpu|wall] [--compile]

Every kind's examples are timed, then other ways of computing some of them (HetConv's dense, split
and channels-last sorted forms; deform with all taps in one column matrix and with an embedding_bag
gather; CondConv's per-sample loop and expert sum), then single primitives that bound what the
composite kinds can reach on this CPU (depthwise and grouped convolutions, 1 x 1 as a matmul,
grid_sample). ``--channels-last`` feeds every op (the dense baseline too) a channels-last input;
``--compile`` adds torch.compile'd versions of the dense conv, HetConv, CondConv and deform (slow to
start: each compiles first).

Goals (issue 13): HetConv P=4 <= 0.5x dense and >= 100x its per-kernel reference; CondConv 4 experts
<= 1.1x dense; deform and deform(m) <= 4x dense; every other kind at least half its MAC-limit
efficiency. Each verdict judges the figure as printed beside it.

Timing: each round runs every candidate ``--inner`` times in a row (the input warm in cache, as it
is when the previous layer has just written it) and the median over rounds is kept. ``--clock cpu``
(the default) counts the thread's CPU time, which a loaded machine's descheduling does not inflate;
``--clock wall`` counts wall time. With one torch thread the ops run on the calling thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _timing import interleaved_medians  # noqa: E402

from nasconv.ops import CONV_KINDS, ConvOp, build_conv, op_class, short_label  # noqa: E402


def deform_one_matrix(op: ConvOp, x: torch.Tensor) -> torch.Tensor:
    """deform with every tap sampled by one grid_sample into a (B, M*k^2, positions) matrix, one bmm."""
    b, m, h, w = x.shape
    n, taps = op.out_channels, op.kernel_size**2
    x = x.contiguous(memory_format=torch.channels_last)
    offset, mask = op.offsets_and_mask(x)
    oh, ow = offset.shape[-2:]
    rows, cols = op.sample_positions(offset)
    grid = torch.stack(((2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1), -1).view(b, taps * oh, ow, 2)
    columns = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    columns = columns.reshape(b, m, taps, oh * ow)
    if mask is not None:
        columns = columns * mask.contiguous().view(b, 1, taps, oh * ow)
    kernel = op.weight.reshape(1, n, m * taps).expand(b, n, m * taps)
    return torch.bmm(kernel, columns.reshape(b, m * taps, oh * ow)).view(b, n, oh, ow)


def deform_gather(op: ConvOp, x: torch.Tensor) -> torch.Tensor:
    """deform with the bilinear mix as a weighted gather of channel vectors: x as a channels-last table
    of pixels (plus a zero row for corners outside), one embedding_bag of the 4 corners per sampled
    value of all channels into (pixel, tap * channel) columns, one matmul."""
    b, m, h, w = x.shape
    n, k = op.out_channels, op.kernel_size
    taps = k * k
    table = torch.cat((x.permute(0, 2, 3, 1).reshape(b * h * w, m), x.new_zeros(1, m)))
    offset, mask = op.offsets_and_mask(x)
    oh, ow = offset.shape[-2:]
    rows, cols = op.sample_positions(offset)
    rows, cols = rows.reshape(b, taps, -1).transpose(1, 2), cols.reshape(b, taps, -1).transpose(1, 2)
    top, left = rows.floor(), cols.floor()
    fy, fx = rows - top, cols - left
    y0, x0 = top.clamp(-2, h).long(), left.clamp(-2, w).long()
    ys = torch.stack((y0, y0, y0 + 1, y0 + 1), -1)
    xs = torch.stack((x0, x0 + 1, x0, x0 + 1), -1)
    weights = torch.stack(((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx), -1)
    if mask is not None:
        weights = weights * mask.reshape(b, taps, -1).transpose(1, 2).unsqueeze(-1)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    first = (torch.arange(b) * (h * w)).view(b, 1, 1, 1)
    index = torch.where(inside, first + ys * w + xs, b * h * w)
    columns = F.embedding_bag(index.reshape(-1, 4), table, per_sample_weights=weights.reshape(-1, 4), mode="sum")
    y = F.linear(columns.view(b * oh * ow, taps * m), op.weight.permute(0, 2, 3, 1).reshape(n, -1))
    return y.view(b, oh, ow, n).permute(0, 3, 1, 2).contiguous()


def goal(label: str, value: float, limit: float, *, at_most: bool = True, decimals: int = 3, unit: str = "x") -> str:
    """One goal's line: the figure as printed, and the verdict on that printed figure (so that a
    ratio never reads as its goal and MISSED at once)."""
    shown = f"{value:.{decimals}f}"
    met = float(shown) <= limit if at_most else float(shown) >= limit
    sense = "<=" if at_most else ">="
    return f"{label:<38}{shown}{unit} (goal {sense} {limit:g})   {'met' if met else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="input batch size (8)")
    parser.add_argument("--channels", type=int, default=64, help="input and output channels of every op (64)")
    parser.add_argument("--size", type=int, default=32, help="input height = width (32)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the ops run on the calling thread)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds; the median is kept (15)")
    parser.add_argument("--inner", type=int, default=5, help="runs of each candidate in a row per round (5)")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="thread CPU time (default) or wall time"
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="feed every op, the dense baseline too, a channels-last input"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd dense, HetConv, CondConv and deform"
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:N] (synchronised timing)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, c, s, dev = args.batch, args.channels, args.size, torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(b, c, s, s, device=dev).contiguous(memory_format=fmt)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    ops: dict[str, ConvOp] = {}
    for kind in CONV_KINDS:
        for example in op_class(kind).examples:
            try:
                op = build_conv(kind, c, c, **example)
            except ValueError:
                continue
            ops[short_label(kind, 3, 1, example)] = op.eval().to(dev)
    dense = ops["standard"]
    het = next(op for name, op in ops.items() if name == "het(p4)")
    cond = next(op for name, op in ops.items() if name == "cond(e4)")
    deform = next(op for name, op in ops.items() if name == "deform")

    def timed(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            fn()
            sync()

        return run

    # other forms of the same function, and primitives
    alternatives: dict[str, tuple[Callable[[], object], int]] = {}
    het_macs = het.count_macs((1, c, s, s))
    for form in het.FORMS:
        variant = build_conv("het", c, c, p=4).eval().to(dev)
        variant.load_state_dict(het.state_dict())
        variant.form = form
        alternatives[f"het(p4) {form} form"] = (lambda v=variant: v(x), het_macs)
    deform_macs = deform.count_macs((1, c, s, s))
    alternatives["deform all taps in one matrix"] = (lambda: deform_one_matrix(deform, x), deform_macs)
    alternatives["deform embedding_bag gather"] = (lambda: deform_gather(deform, x), deform_macs)
    cond_macs = cond.count_macs((1, c, s, s))

    def cond_per_sample_loop() -> torch.Tensor:
        alpha = cond.routing(x)
        kernels = (alpha @ cond.weight.view(cond.experts, -1)).view(b, c, c, 3, 3)
        return torch.cat([F.conv2d(x[i : i + 1], kernels[i], None, 1, 1) for i in range(b)])

    alternatives["cond(e4) per-sample loop"] = (cond_per_sample_loop, cond_macs)
    alternatives["cond(e4) expert-sum form"] = (lambda: cond.forward_expert_sum(x), cond_macs)
    dw = torch.randn(c, 1, 3, 3, device=dev)
    g4 = torch.randn(c, c // 4, 3, 3, device=dev)
    pw = torch.randn(c, c, device=dev)
    alternatives["primitive: depthwise 3x3"] = (lambda: F.conv2d(x, dw, None, 1, 1, 1, c), c * 9 * s * s)
    alternatives["primitive: grouped 3x3 g4"] = (lambda: F.conv2d(x, g4, None, 1, 1, 1, 4), c * c // 4 * 9 * s * s)
    alternatives["primitive: 1x1 as matmul"] = (lambda: torch.matmul(pw, x.reshape(b, c, s * s)), c * c * s * s)
    grid = torch.rand(b, 9 * s, s, 2, device=dev) * 2 - 1
    alternatives["primitive: grid_sample 9 taps"] = (
        lambda: F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False),
        4 * c * 9 * s * s,
    )
    if args.compile:
        for name, op in (("standard", dense), ("het(p4)", het), ("cond(e4)", cond), ("deform", deform)):
            compiled = torch.compile(op)
            with torch.inference_mode():
                compiled(x)
            alternatives[f"{name} torch.compile"] = (lambda f=compiled: f(x), op.count_macs((1, c, s, s)))

    with torch.inference_mode():
        candidates = {name: timed(lambda op=op: op(x)) for name, op in ops.items()}
        candidates.update({name: timed(fn) for name, (fn, _) in alternatives.items()})
        clock = time.thread_time if args.clock == "cpu" and dev.type == "cpu" else time.perf_counter
        times = interleaved_medians(candidates, rounds=args.rounds, inner=args.inner, clock=clock)
        reference = interleaved_medians(
            {"reference": timed(lambda: het.reference_forward(x)), "het": candidates["het(p4)"]},
            rounds=5,
            warmup=1,
            clock=clock,
        )

    base_ms, base_macs = times["standard"], dense.count_macs((1, c, s, s))
    macs = {name: op.count_macs((1, c, s, s)) for name, op in ops.items()}
    macs.update({name: m for name, (_, m) in alternatives.items()})
    layout = "channels-last" if args.channels_last else "NCHW"
    print(
        f"batch {b}, {c}->{c} channels, {s}x{s}, kernel 3, {args.threads} thread(s), {dev}, {layout} input, "
        f"{args.clock} time, median of {args.rounds} rounds x {args.inner}"
    )
    print(f"{'kind':<32}{'ms':>8}{'time x std':>12}{'MACs x std':>12}{'efficiency':>12}")
    efficiency = {}
    for name, t in times.items():
        if name == f"{next(iter(alternatives))}":
            print("-- other forms and primitives (MACs: what the rule counts for the op, or the primitive's own)")
        time_ratio, mac_ratio = t / base_ms, macs[name] / base_macs
        efficiency[name] = mac_ratio / time_ratio
        print(f"{name:<32}{t * 1e3:>8.3f}{time_ratio:>12.2f}{mac_ratio:>12.3f}{efficiency[name]:>12.2f}")
    print()
    speedup = reference["reference"] / reference["het"]
    print(goal("HetConv P=4 vs dense conv:", times["het(p4)"] / base_ms, 0.5))
    print(goal("HetConv vs per-kernel reference:", speedup, 100, at_most=False, decimals=0, unit="x faster"))
    print(goal("CondConv e4 vs dense conv:", times["cond(e4)"] / base_ms, 1.1))
    print(goal("deform vs dense conv:", times["deform"] / base_ms, 4))
    print(goal("deform(m) vs dense conv:", times["deform(m)"] / base_ms, 4))
    others = [n for n in ops if n != "standard" and not n.startswith(("het(p4)", "cond(e4)", "deform"))]
    low = [f"{n} {efficiency[n]:.2f}" for n in others if float(f"{efficiency[n]:.2f}") < 0.5]
    print(f"kinds under half the MAC-limit efficiency (goal: none): {', '.join(low) or 'none'}")


if __name__ == "__main__":
    main()
