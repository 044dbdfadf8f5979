"""Batch augmentation on the training device: ``none``, ``flip`` (horizontal, probability 1/2) and
``crop-flip`` (a random crop of the image padded by 4 black pixels, then the flip: the CIFAR
standard). Applied to stored pixel values before normalisation, so padding is black.

The draws of a whole epoch are made at once on a seeded CPU generator and moved to the device in
one copy: a trial is reproducible per seed, augments alike on every device, and the training loop
never waits on the host for random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import NasconvError
from ..space import AUGMENTATIONS

PAD = 4


@dataclass(frozen=True)
class Draws:
    """The random choices for ``n`` samples: flip or not, and (crop-flip) the crop's offset."""

    flip: torch.Tensor
    """(n,) bool"""
    shift: torch.Tensor | None = None
    """(n, 2) row and column offsets of the crop in the padded image, 0..2*PAD"""

    def to(self, device: torch.device) -> Draws:
        shift = None if self.shift is None else self.shift.to(device, non_blocking=True)
        return Draws(self.flip.to(device, non_blocking=True), shift)

    def __getitem__(self, rows: slice | torch.Tensor) -> Draws:
        return Draws(self.flip[rows], None if self.shift is None else self.shift[rows])


def draw(kind: str, n: int, generator: torch.Generator) -> Draws | None:
    """The draws for ``n`` samples of augmentation ``kind`` (None for ``none``)."""
    if kind not in AUGMENTATIONS:
        raise NasconvError(f"training.augment: unknown {kind!r}; known: {', '.join(AUGMENTATIONS)}")
    if kind == "none":
        return None
    flip = torch.rand(n, generator=generator) < 0.5
    shift = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator) if kind == "crop-flip" else None
    return Draws(flip, shift)


def augment(x: torch.Tensor, draws: Draws) -> torch.Tensor:
    """Apply ``draws`` to a batch ``x`` (B, C, H, W) of pixel values, on ``x``'s device."""
    if draws.shift is None:
        return torch.where(draws.flip[:, None, None, None], x.flip(3), x)
    b, c, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = draws.shift[:, :1] + torch.arange(h, device=x.device)
    columns = torch.arange(w, device=x.device)
    columns = torch.where(draws.flip[:, None], w - 1 - columns, columns) + draws.shift[:, 1:]
    x = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * PAD))
    return x.gather(3, columns[:, None, None, :].expand(b, c, h, w))
