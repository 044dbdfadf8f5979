"""Fuzzing the space loader: 1,000 seeded mutations of the shipped spaces. Every input is either
accepted, and then an architecture drawn from it builds and runs a forward pass, or rejected with
nasconv's own one-line error (at most 300 characters, naming the file); never another exception,
never a hang."""

from __future__ import annotations

import copy
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nasconv.errors import NasconvError
from nasconv.model.arch import build_model, input_shape
from nasconv.search.space import load_space

from .conftest import SPACES

CASES = 1000
SECONDS_PER_CASE = 10

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


def _textual(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    op = rng.randrange(8)
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
    else:  # control and unicode characters in a key
        lines[i] = lines[i].replace(":", "\x07\u2028é:", 1)
    return "\n".join(lines).encode()


def _inputs() -> Iterator[tuple[int, bytes]]:
    rng = random.Random(20261130)
    shipped = sorted(SPACES.glob("*.yaml"))
    sources = [(p.read_text(), yaml.safe_load(p.read_text())) for p in shipped]
    for case in range(CASES):
        text, data = sources[case % len(sources)]
        if rng.random() < 0.6:
            mutated = data
            for _ in range(rng.choice([0, 0, 1, 2])):  # some light mutations, then one that may nest deep
                mutated = _structural(rng, mutated, deep_allowed=False) if isinstance(mutated, dict) else mutated
            mutated = _structural(rng, mutated, deep_allowed=True) if isinstance(mutated, dict) else mutated
            try:
                yield case, yaml.safe_dump(mutated, sort_keys=False, allow_unicode=rng.random() < 0.5).encode()
            except (yaml.YAMLError, RecursionError):
                yield case, str(mutated)[:100_000].encode()
        else:
            yield case, _textual(rng, text)


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _forward(space: Any) -> None:
    arch = space.sample(0)
    # a real forward where it is quick; elsewhere the meta device checks every shape without the arithmetic
    big = any(s.channels > 64 for s in arch.stages) or arch.stem_channels > 64 or arch.input_size > 16
    device = torch.device("meta") if big else torch.device("cpu")
    with torch.device(device):
        model = build_model(arch).eval()
        x = torch.zeros(input_shape(arch, 2))
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == (2, arch.classes)


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
                _forward(space)
                accepted += 1
            except NasconvError as exc:
                message = str(exc)
                assert message.startswith(str(path)), (case, message)
                assert "\n" not in message and len(message) <= 300, (case, message)
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
