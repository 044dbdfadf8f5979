"""The one exception users see: a mistake in their input, reported in one short line."""

from __future__ import annotations

import reprlib

MAX_MESSAGE = 300

_brief = reprlib.Repr()
_brief.maxstring = 40
_brief.maxother = 40
_brief.maxlist = _brief.maxtuple = _brief.maxdict = _brief.maxset = 6
_brief.maxlevel = 2
_brief.maxlong = 40


def brief(value: object) -> str:
    """A short repr of a user's value for an error message (huge lists and numbers abbreviated)."""
    try:
        return _brief.repr(value)
    except Exception:  # noqa: BLE001 - a repr that raises must not hide the real error
        return f"<{type(value).__name__}>"


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` as one printable line of at most ``limit`` characters (control characters escaped)."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in message)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class NasconvError(ValueError):
    """Bad user input (space file, flag, dataset, results folder, stored record). The CLI prints it and
    exits 2. The message is always one line of at most ``MAX_MESSAGE`` characters, naming the file and
    the key path or trial where there is one."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(str(message)))
