"""A file read through a read-only memory map: lines are found, hashed and decoded where they
lie, never copied whole."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

WINDOW = 4 << 20  # bytes a pass reads before it reports progress and lets the pages go


@contextmanager
def mapped(path: Path) -> Iterator[Any]:
    """The file's bytes, mapped read-only (an empty file cannot be mapped: b"")."""
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped_file:
            mapped_file.madvise(mmap.MADV_SEQUENTIAL)
            yield mapped_file


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux ≥ 5.14


def populate(m: Any, start: int, stop: int) -> None:
    start -= start % mmap.PAGESIZE
    if isinstance(m, mmap.mmap) and stop > start:
        with suppress(OSError):  # an older kernel: pages are faulted in as they are read
            m.madvise(MADV_POPULATE_READ, start, stop - start)


def forget(m: Any, start: int, stop: int) -> None:
    """Drop the pages of ``m[start:stop]`` from this process; they stay in the page cache. The
    process's resident memory then does not grow with the file."""
    start -= start % mmap.PAGESIZE
    if isinstance(m, mmap.mmap) and stop > start:
        m.madvise(mmap.MADV_DONTNEED, start, stop - start)
