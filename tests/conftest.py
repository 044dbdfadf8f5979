from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


def tiny_space_dict(**overrides: object) -> dict:
    """A space small enough to search in seconds: synthetic data, 8x8 input."""
    space = {
        "name": "tiny",
        "input": {"channels": 1, "size": 8},
        "classes": 3,
        "dataset": {"name": "synthetic", "samples": 120},
        "stem": {"channels": [4, 8]},
        "stages": [
            {
                "stride": 2,
                "channels": [8, 16],
                "conv": {
                    "standard": {"kernel": [1, 3]},
                    "dsc": {"kernel": 3},
                    "het": {"p": [2, 4]},
                    "ghost": {"ratio": 2},
                    "group": {"groups": [2, 4]},
                    "cond": {"experts": 2},
                },
            }
        ],
        "objectives": ["accuracy", "macs"],
        "search": {"trials": 4, "population": 2, "seed": 0},
        "training": {"epochs": 1, "batch_size": 32},
    }
    space.update(overrides)
    return space


@pytest.fixture
def write_space(tmp_path: Path):
    def write(data: dict, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
