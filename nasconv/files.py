"""Reading users' files: YAML/JSON with limits, so that a hostile or broken file is a one-line error.

Safe loading only (libyaml's ``CSafeLoader`` where installed, else ``SafeLoader``). Limits: the
file's size, nesting depth and node count (a YAML alias bomb shares nodes while parsing, so the
count is taken on the loaded structure, stopping at the limit), and every failure of the parser or
of YAML's scalar tags (``!!int 1.5``, 5,000-digit integers) is a :class:`NasconvError` naming the
file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import NasconvError, brief

MAX_BYTES = 256 << 10  # a space or architecture file is a few KB
MAX_DEPTH = 40
MAX_NODES = 100_000


def read_text(path: str | Path, what: str, max_bytes: int = MAX_BYTES) -> str:
    """A user's text file as str: missing, too large, or not UTF-8 is a NasconvError naming it."""
    path = Path(path)
    if not path.exists():
        raise NasconvError(f"{path}: {what} not found")
    if not path.is_file():
        raise NasconvError(f"{path}: {what} is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise NasconvError(f"{path}: {what} is {size:,} bytes; at most {max_bytes:,} are read")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NasconvError(
            f"{path}: {what} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None


def check_structure(data: Any, where: str) -> None:
    """Refuse structures deeper than MAX_DEPTH or with more than MAX_NODES nodes (aliases counted
    each time they are used: that is what validating them would cost)."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise NasconvError(f"{where}: too large (more than {MAX_NODES:,} values, aliases expanded)")
        if depth > MAX_DEPTH:
            raise NasconvError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((k, depth + 1) for k in node)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


_LOADER: Any = None

# YAML 1.2 (and JSON) floats that YAML 1.1 reads as text: an exponent without a sign (5e6, 60.0e6)
_FLOAT_12 = r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"


def _safe_loader() -> Any:
    """The safe loader (libyaml's ``CSafeLoader`` where installed: 8x faster, else ``SafeLoader``) with
    two changes: a key repeated in one mapping is an error naming its line (never "the last one wins"),
    and YAML 1.2 floats such as ``5e6`` are numbers."""
    global _LOADER
    if _LOADER is None:
        import re

        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class UniqueKeyLoader(base):  # type: ignore[misc, valid-type]
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                if isinstance(node, yaml.MappingNode):
                    seen: dict[Any, int] = {}
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge":  # << merges: explicit keys override
                            continue
                        key = self.construct_object(key_node, deep=True)
                        try:
                            first = seen.get(key)
                        except TypeError:  # an unhashable key: the base constructor reports it
                            continue
                        if first is not None:
                            raise yaml.constructor.ConstructorError(
                                "while constructing a mapping",
                                node.start_mark,
                                f"duplicate key {brief(key)}, first on line {first + 1}",
                                key_node.start_mark,
                            )
                        seen[key] = key_node.start_mark.line
                return super().construct_mapping(node, deep=deep)

        UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_FLOAT_12), list("-+.0123456789"))
        _LOADER = UniqueKeyLoader
    return _LOADER


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text``; every parser or tag failure is a NasconvError naming ``where``."""
    import yaml

    try:
        data = yaml.load(text, Loader=_safe_loader())  # noqa: S506 - a safe loader, never the full one
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}: line {mark.line + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NasconvError(f"{at}: not valid YAML ({problem})") from None
    except RecursionError:
        raise NasconvError(f"{where}: nested too deeply to read") from None
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, AttributeError) as exc:
        # scalar tags that cannot construct (!!int 1.5, !!bool maybe, a 5,000-digit integer)
        raise NasconvError(f"{where}: not valid YAML ({type(exc).__name__}: {exc})") from None
    check_structure(data, where)
    return data


def read_yaml(path: str | Path, what: str) -> Any:
    """A user's YAML (or JSON) file, parsed with limits. Errors name the file (and line)."""
    return parse_yaml(read_text(path, what), str(path))


def _umask() -> int:
    """The process's umask: from /proc on Linux (reading it does not change it, which matters with
    threads), else by setting it and putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file in the same folder, renamed into place on success:
    readers never see a half-written file, and a failure leaves the old one untouched. The file gets
    the permissions any new file would (0666 less the umask: 0644 usually), not mkstemp's 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
