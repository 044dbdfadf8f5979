"""Fuzzing the space loader: 1,000 seeded mutations of the shipped spaces. Every input is either
accepted, and then the space's extreme architectures (every gene at its largest or smallest choice,
each kind in turn) are within the size limits — measured on their operators as built, not by the
closed forms the loader bounds them with — and a drawn one runs a forward pass; or it is rejected with
nasconv's own one-line error (at most 300 characters, naming the file and the key path); never
another exception, never a hang."""

from __future__ import annotations

import copy
import random
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from nasconv.errors import NasconvError
from nasconv.model.arch import (
    MAX_ACTIVATION,
    MAX_LAYER_PARAMS,
    MAX_MACS,
    MAX_PARAMS,
    Arch,
    arch_parts,
    build_model,
    build_part,
    input_shape,
)
from nasconv.ops import ConvOp
from nasconv.search.space import Space, load_space

from .conftest import SPACES

CASES = 1000
SECONDS_PER_CASE = 10
REAL_FORWARD_MACS = 20_000_000
"""Accepted spaces whose drawn network is this cheap also run a real forward (others run on meta)."""

NASTY_VALUES: list[Any] = [
    0,
    -1,
    1,
    2,
    7,
    10**30,
    2**64 + 1,
    -(2**63),
    0.5,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e308,
    1e-308,
    "",
    "relu",
    "x" * 5000,
    "ü\u202eé\u0000",
    "line\nbreak",
    None,
    True,
    False,
    [],
    {},
    [[{}]],
    {"a": {"b": [1, {"c": None}]}},
    list(range(20_000)),
    [3, 3],
    [1, 3, 5],
    [[1, 3], [1, 3, 5]],
    {"standard": {}},
]
# keys whose numbers make a network large, and values within each key's own limits that combine badly
HEAVY_KEYS = ("size", "channels", "kernel", "dw_kernel", "experts", "expand", "depth", "mid", "p", "groups", "ratio")
HEAVY_VALUES: dict[str, list[Any]] = {
    "size": [256, 1024],
    "kernel": [15, 31, [3, 31]],
    "dw_kernel": [31],
    "experts": [64, 512, 4096, [1, 512]],
    "expand": [64, 1024, [1, 512]],
    "depth": [64, [1, 64]],
    "mid": [64.0, 1024.0],
    "p": [1, [1, 2]],
    "groups": [1, [1, 2]],
    "ratio": [2, 64],
}
HEAVY_CHANNELS: list[Any] = [128, 512, 2048, [8, 1024], [16, 4096]]
# per kind, options whose largest choice is fine at the smallest kernel but not with kernel 31
COMBINED: dict[str, dict[str, list[Any]]] = {
    "cond": {"experts": [[1, 512], [2, 4096]]},
    "mbconv": {"expand": [[1, 1024], [2, 4096]]},
    "spatial": {"mid": [[0.5, 1024.0]]},
    "ghost": {"ratio": [[2, 4096]], "dw_kernel": [[3, 31]]},
}
TAGGED = ["!!int 1.5", "!!bool maybe", "!!float ''", "!!binary ###", "!!timestamp nope", "!!set {a, b}",
          "!!python/object:os.system ls", "!!omap [a, b]", "!!int 0x", "!!str", "!!null x"]  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = root
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return root


def _structural(rng: random.Random, data: dict, deep_allowed: bool) -> Any:
    data = copy.deepcopy(data)
    path = rng.choice(list(_paths(data)))
    op = rng.randrange(7 if deep_allowed else 5)
    if op <= 2:
        return _set(data, path, copy.deepcopy(rng.choice(NASTY_VALUES)))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if op == 3 and path and isinstance(parent, dict):
        del parent[path[-1]]
    elif op == 4 and isinstance(parent, dict):
        parent[rng.choice(["stagess", "kernal", "\n", "é", "x" * 300, 7, "conv", "se", "p"])] = rng.choice(NASTY_VALUES)
    elif op == 6:
        deep: Any = 1
        for _ in range(rng.choice([10, 60, 120])):  # 1,000-deep nesting comes in as text
            deep = [deep]
        _set(data, path, deep)
    elif op == 5 or not deep_allowed:
        _set(data, path, [copy.deepcopy(rng.choice(NASTY_VALUES)) for _ in range(rng.randint(0, 40))])
    return data


def _heavy(rng: random.Random, data: dict) -> dict:
    """Numbers that are each within their limits set large together: two options of one kind (a
    combination the loader must bound, not one option at a time), or two or three numbers anywhere
    (compute and feature-map size)."""
    data = copy.deepcopy(data)
    sections = [p for p in _paths(data) if len(p) > 1 and p[-2] == "conv" and p[-1] in COMBINED]
    if sections and rng.random() < 0.5:
        path = rng.choice(sections)
        _set(data, path, {"kernel": [3, 31], **{p: rng.choice(v) for p, v in COMBINED[path[-1]].items()}})
        return data
    paths = [p for p in _paths(data) if p and p[-1] in HEAVY_KEYS]
    for path in rng.sample(paths, min(len(paths), rng.randint(2, 3))):
        values = HEAVY_CHANNELS if path[-1] == "channels" else HEAVY_VALUES[path[-1]]
        _set(data, path, copy.deepcopy(rng.choice(values)))
    return data


def _textual(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    op = rng.randrange(9)
    i = rng.randrange(len(lines))
    if op == 0:  # a scalar tag that cannot construct
        head, sep, _ = lines[i].partition(": ")
        lines[i] = f"{head}{sep or ': '}{rng.choice(TAGGED)}"
    elif op == 1:  # syntax damage
        pos = rng.randrange(len(lines[i]) + 1)
        lines[i] = (
            lines[i][:pos] + rng.choice(["\t", ":", "[", "{", "]", "'", '"', "- ", "&a", "*b", "%"]) + lines[i][pos:]
        )
    elif op == 2:  # truncated
        return text[: rng.randrange(len(text))].encode()
    elif op == 3:  # an alias bomb
        bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        bomb += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 9)]
        return ("\n".join(bomb) + "\n" + text.replace("name:", "name: *a8\nold_name:", 1)).encode()
    elif op == 4:  # a 5,000-digit integer
        head, sep, _ = lines[i].partition(": ")
        lines[i] = f"{head}{sep or ': '}{'9' * 5000}"
    elif op == 5:  # bytes that are not UTF-8
        return text.encode()[: rng.randrange(len(text))] + bytes([0xFF, 0xFE, 0x80]) + text.encode()
    elif op == 6:  # deep flow nesting
        lines[i] = "deep: " + "[" * 1000 + "]" * 1000
    elif op == 7:  # control and unicode characters in a key
        lines[i] = lines[i].replace(":", "\x07\u2028é:", 1)
    else:  # a key written twice
        lines.insert(i, lines[i])
    return "\n".join(lines).encode()


def _inputs() -> Iterator[tuple[int, bytes]]:
    rng = random.Random(20261130)
    shipped = sorted(SPACES.glob("*.yaml"))
    sources = [(p.read_text(), yaml.safe_load(p.read_text())) for p in shipped]
    for case in range(CASES):
        text, data = sources[case % len(sources)]
        draw = rng.random()
        if draw < 0.6:
            mutated = data
            for _ in range(rng.choice([0, 0, 1, 2])):  # some light mutations, then one that may nest deep
                mutated = _structural(rng, mutated, deep_allowed=False) if isinstance(mutated, dict) else mutated
            if rng.random() < 0.25:
                mutated = _heavy(rng, mutated) if isinstance(mutated, dict) else mutated
            else:
                mutated = _structural(rng, mutated, deep_allowed=True) if isinstance(mutated, dict) else mutated
            try:
                dumped = yaml.dump(mutated, Dumper=DUMPER, sort_keys=False, allow_unicode=rng.random() < 0.5)
                yield case, dumped.encode()
            except (yaml.YAMLError, RecursionError):
                yield case, str(mutated)[:100_000].encode()
        else:
            yield case, _textual(rng, text)


DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: the 20,000-element lists dump fast


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _extremes(choices: tuple[Any, ...]) -> tuple[Any, Any]:
    """(smallest, largest) of a gene's choices: numbers by value, lists by length then largest entry."""

    def order(value: Any) -> tuple:
        if isinstance(value, str) and value.startswith("["):  # a list-valued option, stored as JSON
            value = yaml.safe_load(value)
        if isinstance(value, (list, tuple)):
            return (len(value), max(value))
        return (0, float(value)) if isinstance(value, (int, float)) else (0, 0.0)

    return min(choices, key=order), max(choices, key=order)


def _extreme_archs(space: Space, rng: random.Random) -> Iterator[Arch]:
    """The space's extreme architectures: every gene at its largest choice with each allowed kind in
    turn (the kind gene's i-th choice), then genes at random extremes."""
    kinds = max(len(choices) for name, choices in space.genes() if name.endswith(".kind"))
    for turn in range(kinds + 3):

        def pick(name: str, choices: tuple[Any, ...], turn: int = turn) -> Any:
            if name.endswith(".kind"):
                return choices[turn % len(choices)] if turn < kinds else rng.choice(choices)
            return _extremes(choices)[1 if turn < kinds else rng.randrange(2)]

        yield space.decode(space.draw(pick))


_PARTS: dict[str, tuple[int, int, int, int]] = {}


def _measure_part(key: str) -> tuple[int, int, int, int]:
    """(its largest operator's parameters, parameters, MACs, largest feature map) of one part of a
    network (stem, block or head), built on the meta device: its parameter tensors, and the cost
    model's MAC rules (``ConvOp.count_macs``, thop's for 1 x 1 convolutions on the pooled SE vector and
    linear layers) at the part's input shape; independent of the closed forms the loader bounds with."""
    found = _PARTS.get(key)
    if found is not None:
        return found
    with torch.device("meta"):
        module, (channels, height, width) = build_part(key)
    layer = macs = 0
    activation = channels * height * width
    for m in module.modules():
        if isinstance(m, ConvOp):  # the stem's and a block's operator: they see the part's input
            layer = max(layer, sum(p.numel() for p in m.parameters()))
            macs += m.count_macs((1, channels, height, width))
            out_h, out_w = m.output_size(height, width)
            activation = max(activation, m.out_channels * out_h * out_w)
        elif isinstance(m, nn.Conv2d):  # squeeze-and-excitation, on the pooled 1 x 1 vector
            macs += m.in_channels // m.groups * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            layer = max(layer, sum(p.numel() for p in m.parameters()))
            macs += m.in_features * m.out_features
    found = _PARTS[key] = (layer, sum(p.numel() for p in module.parameters()), macs, activation)
    return found


def _measure(arch: Arch) -> tuple[int, int, int, int]:
    """(largest layer's parameters, parameters, MACs of one image, largest feature map of one image)."""
    parts = [_measure_part(key) for key in arch_parts(arch)]
    return (
        max(p[0] for p in parts),
        sum(p[1] for p in parts),
        sum(p[2] for p in parts),
        max(p[3] for p in parts),
    )


def _check_accepted(space: Space, case: int) -> None:
    """The space's worst case within the limits; a drawn network runs (for real where it is cheap)."""
    rng = random.Random(case)
    for arch in _extreme_archs(space, rng):
        layer, params, macs, activation = _measure(arch)
        figures = f"case {case}: {arch.short()} at {arch.input_size} px"
        assert layer <= MAX_LAYER_PARAMS, (figures, f"a layer of {layer:,} parameters")
        assert params <= MAX_PARAMS, (figures, f"{params:,} parameters")
        assert macs <= MAX_MACS, (figures, f"{macs:.3g} MACs")
        assert activation <= MAX_ACTIVATION, (figures, f"a feature map of {activation:,} values")
    arch = space.sample(0)
    cheap = _measure(arch)[2] <= REAL_FORWARD_MACS
    with torch.device("cpu" if cheap else "meta"):
        model = build_model(arch).eval()
        x = torch.zeros(input_shape(arch, 2))
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == (2, arch.classes)


# what a rejection names after the file: a key path (``stages[0].conv.het.p: ...``), or, for a file
# that is not a readable mapping at all, where in the text (``line 3: ...``) or what is wrong with it
KEY_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\d+\]|\.[^\s:]+)*: ")
FILE_LEVEL = (
    "line ",
    "not valid YAML",
    "is not UTF-8",
    "too large",
    "nested ",
    "a space file must be",
    "space file ",
    "unknown key ",  # a top-level key, named
    "key ",
)


def test_fuzzed_spaces_load_or_fail_with_one_line(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGALRM, _alarm)
    accepted = rejected = 0
    try:
        for case, content in _inputs():
            path = tmp_path / f"case{case}.yaml"
            path.write_bytes(content)
            signal.alarm(SECONDS_PER_CASE)
            try:
                space = load_space(path)
                _check_accepted(space, case)
                accepted += 1
            except NasconvError as exc:
                message = str(exc)
                assert message.startswith(f"{path}: "), (case, message)
                assert "\n" not in message and len(message) <= 300, (case, message)
                where = message.removeprefix(f"{path}: ")
                assert KEY_PATH.match(where) or where.startswith(FILE_LEVEL), (case, message)
                rejected += 1
            except _Timeout:
                pytest.fail(f"case {case} took more than {SECONDS_PER_CASE}s: {content[:300]!r}")
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"case {case}: {type(exc).__name__}: {str(exc)[:300]} for {content[:400]!r}")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert accepted + rejected == CASES
    assert accepted > CASES / 20 and rejected > CASES / 3  # the mutations reach both outcomes
