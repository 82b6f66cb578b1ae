"""Safe access to a model file: regular files only, read-only, never blocking, bounds-checked.

A ``Source`` maps the file read-only (or, for a file too small to map, reads it) and every read is
checked against the real file size first, so a length that the file merely claims can never make
us allocate or read past the end.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import stat
import struct
from pathlib import Path
from types import TracebackType

from membudget.errors import ModelFileError

__all__ = ["Source", "open_regular_file", "parse_json", "read_small_file"]

SMALL_FILE_CAP = 16 * 1024 * 1024
"""Configs and shard indexes are kilobytes; a bigger one is not what it claims to be."""


def open_regular_file(path: Path, error: type[ModelFileError]) -> int:
    """Open ``path`` read-only and return the descriptor; refuse anything but a regular file.

    The check happens before opening, and the open never blocks (O_NONBLOCK), so a FIFO or a
    device given as a model file cannot hang us.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(path, "no such file") from None
    except OSError as e:
        raise error(path, f"cannot stat it ({e.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(path, "it is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(path, "it is not a regular file (a FIFO, socket or device?)")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(path, f"cannot open it ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # it changed between stat and open
        os.close(fd)
        raise error(path, "it is not a regular file")
    return fd


class Source:
    """A read-only, bounds-checked view of a model file.

    ``buf`` holds the file's bytes from offset 0: the whole file here (mapped), the part read so
    far for a remote file (:class:`membudget.readers.remote.source.RemoteSource`). Parsers call
    :meth:`need` (or :meth:`ensure`, which never fails) before reading ``buf`` at an offset, so
    the same parser reads both."""

    window_max = 1 << 23
    """The most bytes a parser should ask for at once beyond what it needs (a scan window)."""

    def __init__(self, path: Path, error: type[ModelFileError]) -> None:
        self.path = path
        self.error = error
        fd = open_regular_file(path, error)
        try:
            self.size = os.fstat(fd).st_size
            if self.size == 0:
                raise error(path, "the file is empty")
            self.buf: mmap.mmap | bytes = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise error(path, f"cannot map it ({e.strerror})") from None
        finally:
            os.close(fd)

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            # A view into the map may still be referenced (by the frame of an exception on its
            # way out); then the map is unmapped when that view is collected.
            with contextlib.suppress(BufferError):
                self.buf.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def need(self, offset: int, length: int, what: str) -> None:
        """Raise a truncation error unless ``length`` bytes exist at ``offset``; make them
        readable in ``buf``."""
        if length < 0 or offset + length > self.size:
            raise self.error(
                self.path,
                f"file is truncated: {what} needs {length} bytes at offset {offset}, "
                f"but the file has {self.size} bytes",
            )
        self.ensure(offset + length)

    def ensure(self, end: int) -> None:
        """Make ``buf`` hold the file's bytes up to ``min(end, size)`` (all of them here)."""

    def unpack(self, fmt: struct.Struct, offset: int, what: str) -> tuple[object, ...]:
        self.need(offset, fmt.size, what)
        return fmt.unpack_from(self.buf, offset)

    def bytes_at(self, offset: int, length: int, what: str) -> bytes:
        self.need(offset, length, what)
        return bytes(self.buf[offset : offset + length])


def read_small_file(path: Path, error: type[ModelFileError], cap: int = SMALL_FILE_CAP) -> bytes:
    """The whole of a small regular file (a config or an index), refusing one over ``cap``."""
    fd = open_regular_file(path, error)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise error(path, f"the file has {size} bytes; at most {cap} are expected")
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            return fh.read(cap + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def parse_json(data: bytes | str, path: Path, error: type[ModelFileError], what: str) -> object:
    """``json.loads`` with every failure (bad UTF-8, bad syntax, nesting too deep for the
    parser) reported as ``error`` naming ``path``."""
    try:
        return json.loads(data)
    except RecursionError:
        raise error(path, f"{what} is not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise error(path, f"{what} is not valid JSON ({e})") from None
