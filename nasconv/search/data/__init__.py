"""Datasets, all read from local files or from packages (nothing is downloaded), held small.

* :mod:`.sources`: the formats (CIFAR-10 batches, MNIST IDX, image folders, npz) and their splits;
* :mod:`.cache`: the per-node, memory-mapped uint8 cache every trial worker shares;
* :mod:`.dataset`: :class:`Data` (train / val / test splits, per-channel normalisation per batch);
* :mod:`.augment`: flip and crop-flip, drawn per epoch from a seeded generator, applied on the device.
"""

from __future__ import annotations

from .augment import AUGMENTATIONS, Draws, augment, draw
from .cache import CACHE_ENV, CacheEntry, cache_root, open_cache
from .dataset import Data, Split, channel_stats, check_available, load_data, normalise, prepare_data, space_data
from .sources import IMAGE_SUFFIXES, fit_images, locate

__all__ = [
    "AUGMENTATIONS",
    "CACHE_ENV",
    "IMAGE_SUFFIXES",
    "CacheEntry",
    "Data",
    "Draws",
    "Split",
    "augment",
    "cache_root",
    "channel_stats",
    "check_available",
    "draw",
    "fit_images",
    "load_data",
    "locate",
    "normalise",
    "open_cache",
    "prepare_data",
    "space_data",
]
