"""The one error type that user mistakes raise.

Every message names what is wrong (the file and line, or the value) and how to fix it.
The command line prints ``error: <message>`` and exits with status 2, without a traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class IrdistillError(Exception):
    """A problem with the user's input or settings (not a bug in irdistill)."""

    def __init__(self, message: str, *, hint: str | None = None, path: str | Path | None = None,
                 line: int | None = None):
        self.message = message
        self.hint = hint
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}, line {self.line}: " if self.line is not None else f"{self.path}: "
        text = f"{where}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


def suggest(value: str, choices: Iterable[str]) -> str:
    """A 'did you mean' hint for a mistyped name, or a list of the valid names."""
    choices = sorted(choices)
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    shown = ", ".join(choices[:20]) + (", ..." if len(choices) > 20 else "")
    return f"choose one of: {shown}"


def unknown_name(kind: str, value: str, choices: Iterable[str]) -> IrdistillError:
    return IrdistillError(f"unknown {kind} '{value}'", hint=suggest(value, choices))
