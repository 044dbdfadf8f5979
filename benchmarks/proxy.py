"""Is the short proxy a fair judge? Rank correlation of proxy accuracy with long-budget accuracy.

    python benchmarks/proxy.py [--archs 10] [--long 20]

Draws random architectures of search_spaces/digits.yaml, trains each with the space's proxy
budget (training.epochs) and with a long budget, both from scratch with the same seed, and
prints Spearman's rho between the two accuracies.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from nasconv.search.data import space_data
from nasconv.search.space import load_space
from nasconv.search.training import train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", type=int, default=10)
    parser.add_argument("--long", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "digits.yaml"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = load_space(args.space)
    spec = space.spec
    data = space_data(spec)
    proxy_epochs = spec.training.epochs
    rows = []
    start = time.perf_counter()
    for i in range(args.archs):
        arch = space.sample(args.seed * 1000 + i)
        short, _ = train(arch, data, spec.training)
        long, _ = train(arch, data, spec.training, epochs=args.long)
        rows.append((arch.short(), short.accuracy, long.accuracy, short.train_seconds, long.train_seconds))
        print(
            f"{i:>2} {arch.short():<40} proxy {short.accuracy:.4f} ({short.train_seconds:.1f}s)  "
            f"long {long.accuracy:.4f} ({long.train_seconds:.1f}s)",
            flush=True,
        )
    rho, p = spearmanr([r[1] for r in rows], [r[2] for r in rows])
    print(
        f"\nSpearman rho, proxy ({proxy_epochs} epochs) vs long ({args.long} epochs), {len(rows)} architectures: "
        f"{rho:.3f} (p={p:.3g}); proxy costs {sum(r[3] for r in rows) / sum(r[4] for r in rows):.1%} of the long "
        f"budget; {time.perf_counter() - start:.0f}s in all"
    )


if __name__ == "__main__":
    main()
