"""File helpers: atomic writes and checked opening of text inputs."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from irdistill.errors import IrdistillError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    If the block raises (or the process dies), ``path`` is untouched and no partial file
    remains under its name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")


def check_input_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable, non-empty file; else raise a clear error."""
    path = Path(path)
    if not path.exists():
        raise IrdistillError(f"{what} not found", path=path, hint="check the path")
    if path.is_dir():
        raise IrdistillError(f"expected a {what}, found a directory", path=path,
                             hint="give the path of the file inside it")
    if path.stat().st_size == 0:
        raise IrdistillError(f"{what} is empty", path=path)
    return path


def iter_lines(path: str | Path, what: str = "file") -> Iterator[tuple[int, str]]:
    """Yield (line number, line without newline) of a UTF-8 text file, streaming.

    Invalid UTF-8 raises an error that names the line.
    """
    path = check_input_file(path, what)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise IrdistillError(f"invalid UTF-8 in {what} ({exc.reason} at byte {exc.start})",
                                     path=path, line=number,
                                     hint="re-encode the file as UTF-8") from None
            yield number, line.rstrip("\r\n")
