"""search_spaces/reference.yaml documents every key of the space schema, with its default."""

from __future__ import annotations

import re

import pytest
import yaml
from pydantic import BaseModel

from nasconv.search.space import SpaceSpec, load_space

from .conftest import SPACES

REFERENCE = SPACES / "reference.yaml"


def _sections(text: str) -> dict[str, str]:
    """Each top-level key's block of lines (commented-out keys included)."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z_]+):", line)
        if match:
            current = match.group(1)
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line)
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def _listed(block: str, key: str) -> bool:
    return re.search(rf"^\s*(-\s+)?(#\s*)?{re.escape(key)}:", block, re.MULTILINE) is not None


SECTIONS = {
    name: field.annotation
    for name, field in SpaceSpec.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}


def test_reference_space_loads() -> None:
    space = load_space(REFERENCE)
    assert space.count() > 1


def test_reference_space_lists_every_top_level_key() -> None:
    sections = _sections(REFERENCE.read_text())
    assert set(SpaceSpec.model_fields) <= set(sections)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_reference_space_lists_every_key_with_its_default(section: str) -> None:
    model = SECTIONS[section]
    block = _sections(REFERENCE.read_text())[section]
    missing = [key for key in model.model_fields if not _listed(block, key)]
    assert not missing, f"{section}: {missing}"
    written = yaml.safe_load(REFERENCE.read_text())[section]
    for key, value in written.items():
        default = model.model_fields[key].default
        if section in ("search", "training", "latency") and default is not None:
            assert value == default, f"{section}.{key}: {value!r}, but the default is {default!r}"
