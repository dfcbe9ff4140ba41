"""File helpers: atomic writes and checked opening of text inputs."""
from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from irdistill.errors import IrdistillError


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (no race with threads
    creating files), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from co-workers
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


GZIP_MAGIC = b"\x1f\x8b"


def open_binary(path: str | Path):
    """``path`` opened for reading bytes, decompressed on the fly when it is gzip (by its first
    bytes, whatever its name), as other IR tools read ``.gz`` runs and qrels."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def iter_lines(path: str | Path, what: str = "file") -> Iterator[tuple[int, str]]:
    """Yield (line number, line without newline) of a UTF-8 text file, streaming: gzip is
    decompressed, a byte-order mark and Windows line endings are dropped.

    Invalid UTF-8 (or a truncated gzip file) raises an error that names the line.
    """
    path = check_input_file(path, what)
    number = 0
    try:
        with open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # the UTF-8 byte-order mark some editors write
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise IrdistillError(f"invalid UTF-8 in {what} ({exc.reason} at byte "
                                         f"{exc.start})", path=path, line=number,
                                         hint="re-encode the file as UTF-8") from None
                yield number, line.rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IrdistillError(f"the gzip-compressed {what} is damaged ({exc})", path=path,
                             line=number + 1,
                             hint="compress it again, or give the plain file") from None


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Check before any work that ``path`` can be written as a file: not a directory, and its
    parent, if it exists, a directory. Returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise IrdistillError(f"{what} is a directory", path=path,
                             hint="give the path of a file, e.g. inside that folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise IrdistillError(f"cannot write the {what}: '{parent}' is a file, not a "
                                     "folder", path=path)
            break
    return path


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Check before any work that ``path`` can be (or is) a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IrdistillError(f"{what} is a file", path=path, hint="give the path of a folder")
    check_output_file(path / "x", what)
    return path


# -- append-only checkpoints of finished work (re-ranking, teacher scoring) --------------------
def read_jsonl_checkpoint(path: str | Path) -> list[Any]:
    """The records of an append-only JSONL checkpoint, in order.

    A kill while a record was being appended leaves a cut last line (no newline, or not valid
    JSON): it is dropped and the file truncated after the last whole record, so the next
    :func:`append_jsonl` starts on a clean line (appending after the cut line would glue two
    records into one unreadable line). A bad line before the last means the file was not written
    by irdistill: an error naming the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise IrdistillError("expected a checkpoint file, found a directory", path=path)
    data = path.read_bytes()
    lines = data.split(b"\n")  # the last item is b"" when the file ends with a newline
    records: list[Any] = []
    good_end = offset = 0
    for number, raw in enumerate(lines, start=1):
        complete = number < len(lines)
        offset += len(raw) + complete
        if not raw.strip():
            good_end = offset if complete else good_end
            continue
        try:
            if not complete:
                raise ValueError("no newline")
            records.append(json.loads(raw.decode("utf-8")))
            good_end = offset
        except ValueError:
            if number < len(lines) - 1:
                raise IrdistillError("unreadable record in the checkpoint", path=path,
                                     line=number,
                                     hint="delete the file to start this work over") from None
            logging.getLogger(__name__).warning(
                "%s, line %d: record cut by an interruption dropped", path, number)
    if good_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
    return records


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append one record as a line and force it to disk (see :func:`read_jsonl_checkpoint`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


CHECKPOINT_HEADER = "__irdistill__"


def start_checkpoint(path: str | Path, identity: dict | None) -> None:
    """Begin a new checkpoint with a record of what its work depends on (``identity``), so a
    resumed call can tell whether the records are its own (see :func:`read_checkpoint`)."""
    if identity is not None and not Path(path).exists():
        append_jsonl(path, {CHECKPOINT_HEADER: identity})


def read_checkpoint(path: str | Path, identity: dict | None = None,
                    what: str = "work") -> dict[str, Any]:
    """The finished records of an interrupted call, merged into one dict (query id -> result).

    When the file begins with an identity record that differs from ``identity``, an error names
    the settings that differ: results of other settings are never mixed in.
    """
    done: dict[str, Any] = {}
    records = read_jsonl_checkpoint(path)
    if records and isinstance(records[0], dict) and CHECKPOINT_HEADER in records[0]:
        written = records.pop(0)[CHECKPOINT_HEADER]
        if identity is not None and written != identity:
            differ = sorted(k for k in set(written) | set(identity)
                            if written.get(k) != identity.get(k))
            raise IrdistillError(
                f"the partial results of an interrupted {what} were made with other settings "
                f"({', '.join(differ)} differ)", path=path,
                hint="run the same command as before to resume it, or delete this file to "
                     "start over")
    for record in records:
        if not isinstance(record, dict):
            raise IrdistillError("unreadable record in the checkpoint", path=path,
                                 hint="delete the file to start this work over")
        done.update(record)
    return done


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block: one process at a
    time builds a cache (the others wait, then find it built). POSIX ``flock``; elsewhere no
    lock."""
    try:
        import fcntl  # POSIX only
    except ImportError:  # not on POSIX: no lock
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
