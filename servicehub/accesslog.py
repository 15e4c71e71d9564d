"""Incremental reading of Traefik's JSON access log: the last request time of each router.

The reaper runs every minute and must not re-read the whole log each time, lose lines when the
log is rotated, or count a line twice. Only complete lines are ever consumed.

Files are known by their content, not by their inode. A file's *fingerprint* is a hash of its
first complete line (Traefik's lines carry a nanosecond start time, so no two files share one,
except copies of the same log). ``LogPosition.files`` maps each fingerprint seen on the last
read to the offset of its next unread byte (in uncompressed bytes). Each read looks at the live
file and its rotated siblings (``access.json.N`` and ``access.json.N.gz``, N up to
``GENERATIONS``), youngest first, and for each fingerprint:

- known: read it from its offset, wherever it is now (renamed to ``.1`` and still being written
  by a Traefik that never got its USR1; compressed to ``.2.gz`` two rotations later; the copy
  ``copytruncate`` left behind);
- unknown, and younger than the youngest known file (or nothing is known): everything in it is
  new (the file was created or refilled since the last read), so read it from the start;
- unknown and older, or any rotated file on a first run: history, not read. Its end is noted.

"Younger" is the rotation order (live, ``.1``, ``.2``, ...), not a clock: a wall-clock step or a
coarse mtime cannot hide a file. Lines that logrotate itself drops (``copytruncate`` between its
copy and its truncation) and files rotated out of the window are not recovered.

A known compressed file whose uncompressed size (the gzip trailer's ISIZE, modulo 4 GiB) equals
its offset has nothing new and is not decompressed again.

A position saved before fingerprints existed (``files`` is None: only the live file's inode and
offset) still works: the file that has that inode is known at that offset; if none has it, the
read behaves like a first run, as that reader did. Every new position also carries the live
file's inode and offset, so an older reader can use it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path

from .times import parse_iso

log = logging.getLogger("servicehub.accesslog")

CHUNK = 8 * 1024 * 1024
GZIP_CHUNK = 256 * 1024  # compressed bytes per step (JSON logs inflate about 10-20 times)
GENERATIONS = 3  # access.json.1 .. .3(.gz): three rotations (days) between two reads
FINGERPRINT_BYTES = 4096  # a first line longer than this is known by its first 4 KiB
# Go writes JSON object keys sorted: Duration < RouterName < StartUTC < time on every line. Quotes
# inside values are escaped (\"), so request data can never fake a key.
_ROUTER_RE = re.compile(rb',"RouterName":"([^"\n]*)"')
_TIME_RE = re.compile(rb',"time":"([^"\n]*)"')
# "time" has whole seconds only; StartUTC (nanoseconds) + Duration (ns) is the same moment, exact.
_START_RE = re.compile(rb',"StartUTC":"([^"\n]*)"')
_DURATION_RE = re.compile(rb'[{,]"Duration":(\d+)[,}]')


@dataclass(frozen=True)
class LogPosition:
    """Where the next read starts. ``inode``/``offset``: the live file's (the whole position in
    the old format, still written for an older reader). ``files``: fingerprint -> next unread
    byte of every file seen on the last read; None for a position in the old format."""

    inode: int
    offset: int
    files: tuple[tuple[str, int], ...] | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"inode": self.inode, "offset": self.offset}
        if self.files is not None:
            data["files"] = dict(self.files)
        return data

    @classmethod
    def from_json(cls, data: object) -> LogPosition | None:
        if not (
            isinstance(data, dict)
            and isinstance(data.get("inode"), int)
            and isinstance(data.get("offset"), int)
        ):
            return None
        raw = data.get("files")
        files = None
        if isinstance(raw, dict) and all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in raw.items()
        ):
            files = tuple(sorted(raw.items()))
        return cls(data["inode"], data["offset"], files)


@dataclass
class _File:
    """One opened candidate: the descriptor pins the file even if logrotate renames it."""

    path: Path
    generation: int  # 0 live, N for access.json.N and access.json.N.gz
    fh: BufferedReader
    compressed: bool
    inode: int
    size: int  # on disk
    fingerprint: str | None

    def head(self) -> bytes:
        if not self.compressed:
            return os.pread(self.fh.fileno(), FINGERPRINT_BYTES, 0)
        try:  # a gzip file still being written or damaged: its start is all that is needed
            inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            return inflate.decompress(os.pread(self.fh.fileno(), 16384, 0), FINGERPRINT_BYTES)
        except zlib.error:
            return b""

    def uncompressed_size(self) -> int | None:
        """The gzip trailer's ISIZE: the uncompressed size modulo 4 GiB."""
        if self.size < 18:
            return None
        return int.from_bytes(os.pread(self.fh.fileno(), 4, self.size - 4), "little")

    def end_of_lines(self) -> int:
        """The offset after the last complete line, without reading the file."""
        if self.compressed:
            return self.uncompressed_size() or 0
        end = self.size
        while end > 0:
            start = max(0, end - 65536)
            block = os.pread(self.fh.fileno(), end - start, start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
        return 0

    def read_from(self, offset: int, last: dict[bytes, bytes]) -> int:
        """Fold complete lines from ``offset`` into ``last``; the new offset."""
        if not self.compressed:
            return _scan_file(self.fh, offset, last)
        isize = self.uncompressed_size()
        if isize is not None and isize == offset % (1 << 32):
            return offset  # read to its end before
        inflated = _Gunzip(self, offset)
        end = _scan(inflated, offset, last)
        # A gzip file never grows: once read to its end, a last line without its newline never
        # gets one. Its whole length is then the offset, which the ISIZE check above matches.
        return inflated.length if inflated.complete else end


class _Gunzip:
    """The uncompressed bytes of a gzip file after the first ``skip``, block by block. A damaged
    or unfinished file yields what it can, with a warning: the lines before the damage count."""

    def __init__(self, f: _File, skip: int) -> None:
        self.f, self.skip = f, skip
        self.length = 0  # uncompressed bytes passed, skipped ones included
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        fd, at, path = self.f.fh.fileno(), 0, self.f.path
        inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        while at < self.f.size:
            data = os.pread(fd, GZIP_CHUNK, at)
            if not data:
                break
            at += len(data)
            more = False  # output held back by the CHUNK limit
            while data or more:
                if inflate.eof:
                    if not data:
                        break
                    inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # another member
                try:
                    block = inflate.decompress(data, CHUNK)
                except zlib.error as exc:
                    log.warning("access log %s damaged (%s): read up to there", path, exc)
                    return
                more = len(block) == CHUNK
                data = inflate.unconsumed_tail or (inflate.unused_data if inflate.eof else b"")
                self.length += len(block)
                if self.length > self.skip:
                    yield block[max(0, len(block) - (self.length - self.skip)) :]
        if inflate.eof:
            self.complete = True
        else:
            log.warning("access log %s ends early (being compressed?): read up to there", path)


def _fingerprint(head: bytes) -> str | None:
    newline = head.find(b"\n")
    if newline >= 0:
        head = head[: newline + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None  # no complete first line yet: nothing in this file was consumed
    return hashlib.sha256(head).hexdigest()[:32]


def _candidates(path: Path) -> Iterator[tuple[Path, int, bool]]:
    """Youngest first; the plain file of a generation before its compressed one, so a file
    being compressed while this runs is met at least once (gzip removes it only when done)."""
    yield path, 0, False
    for generation in range(1, GENERATIONS + 1):
        plain = path.with_name(f"{path.name}.{generation}")
        yield plain, generation, False
        yield plain.with_name(plain.name + ".gz"), generation, True


def _open_all(path: Path, stack: ExitStack) -> list[_File]:
    """Opened youngest first: a file renamed meanwhile (N to N+1) is met again, never missed."""
    files = []
    for candidate, generation, compressed in _candidates(path):
        try:
            fh = stack.enter_context(candidate.open("rb"))
        except FileNotFoundError:
            continue
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            continue
        opened = _File(candidate, generation, fh, compressed, st.st_ino, st.st_size, None)
        opened.fingerprint = _fingerprint(opened.head())
        files.append(opened)
    return files


def _parse_time(raw: bytes) -> float | None:
    """An RFC 3339 time as Go writes it (up to nanoseconds), or ``<start>|<duration ns>``."""
    start, _, duration = raw.partition(b"|")
    try:
        parsed = parse_iso(start.decode("ascii"))
    except UnicodeDecodeError:
        return None
    if parsed is None:
        return None
    when = parsed.timestamp()
    return when + int(duration) / 1e9 if duration else when


def _scan(blocks: Iterable[bytes], offset: int, last: dict[bytes, bytes]) -> int:
    """Fold the complete lines in ``blocks`` (the file's bytes from ``offset`` on) into ``last``
    (router -> raw time). The offset after the last complete line."""
    carry = b""
    for block in blocks:
        data = carry + block
        end = data.rfind(b"\n") + 1  # only complete lines; the rest waits for next time
        _fold_lines(data, end, last)
        offset += end
        carry = data[end:]
    return offset


def _scan_file(fh: BufferedReader, offset: int, last: dict[bytes, bytes]) -> int:
    """``_scan`` of a plain file from ``offset``, read into one reused buffer: a new block and
    a joined copy per read cost as much as the search itself (fresh memory is slow to touch)."""
    fh.seek(offset)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    have = 0  # bytes of an incomplete line at the buffer's start
    while True:
        if have == len(buf):  # one line longer than the buffer: make room
            view.release()
            buf.extend(bytes(len(buf)))
            view = memoryview(buf)
        read = fh.readinto(view[have:])
        if not read:
            return offset
        total = have + read
        end = buf.rfind(b"\n", 0, total) + 1  # only complete lines; the rest waits
        _fold_lines(buf, end, last)
        offset += end
        have = total - end
        buf[:have] = buf[end:total]


def _fold_lines(data: bytes | bytearray, end: int, last: dict[bytes, bytes]) -> None:
    """Fold the lines in ``data[:end]`` into ``last`` (router -> raw time)."""
    # One C-speed pass for router names; the time only of each router's last line.
    ends = {m.group(1): m.end() for m in _ROUTER_RE.finditer(data, 0, end)}
    for router, pos in ends.items():
        eol = data.find(b"\n", pos)
        start = _START_RE.search(data, pos, eol)
        if start is not None:
            bol = data.rfind(b"\n", 0, pos) + 1
            duration = _DURATION_RE.search(data, bol, pos)
            ns = duration.group(1) if duration is not None else b""
            last[router] = start.group(1) + b"|" + ns
            continue
        found = _TIME_RE.search(data, pos, eol)
        if found is not None:
            last[router] = found.group(1)


def _fold(seen: dict[str, float], last: dict[bytes, bytes]) -> None:
    """Merge one file's routers into ``seen``, keeping each router's latest time."""
    for router, raw in last.items():
        when = _parse_time(raw)
        name = router.decode("utf-8", "replace")
        if when is not None and when > seen.get(name, float("-inf")):
            seen[name] = when


def read_new_requests(
    path: Path, position: LogPosition | None
) -> tuple[dict[str, float], LogPosition | None]:
    """Routers seen since ``position`` with their last request time, and the new position.

    ``position`` None (no saved state): the live file from its start, rotated files not at all.
    """
    with ExitStack() as stack:
        files = _open_all(path, stack)
        if not files:
            return {}, position
        return _read(files, position)


def _read(files: list[_File], position: LogPosition | None) -> tuple[dict[str, float], LogPosition]:
    known = dict(position.files) if position is not None and position.files is not None else {}
    if position is not None and position.files is None:  # old format: an inode and offset
        for f in files:
            if f.inode == position.inode and f.fingerprint and position.offset <= f.size:
                known[f.fingerprint] = position.offset
                break
    first_run = position is None or (position.files is None and not known)
    anchor = min((f.generation for f in files if f.fingerprint in known), default=None)

    # One file per fingerprint: the youngest plain one (a superset of any copy or of its gzip
    # being written), else the compressed one.
    chosen: dict[str, _File] = {}
    for f in files:
        if f.fingerprint is not None:
            current = chosen.get(f.fingerprint)
            if current is None or (current.compressed and not f.compressed):
                chosen[f.fingerprint] = f

    seen: dict[str, float] = {}
    offsets: dict[str, int] = {}
    for fingerprint, f in chosen.items():
        generation = min(g.generation for g in files if g.fingerprint == fingerprint)
        if fingerprint in known:
            start = known[fingerprint]
            if not f.compressed and start > f.size:
                start = 0  # shorter than what was read of it: not the same content after all
        elif (generation == 0) if first_run else (anchor is None or generation < anchor):
            start = 0
        else:
            offsets[fingerprint] = f.end_of_lines()
            continue
        last: dict[bytes, bytes] = {}
        end = f.read_from(start, last)
        _fold(seen, last)
        if not f.compressed and _fingerprint(f.head()) != fingerprint:
            # Truncated and refilled (copytruncate) while this read ran: the lines read were
            # real requests, but the offset belongs to neither content. Read it again next time.
            end = start
        offsets[fingerprint] = end

    live = next((f for f in files if f.generation == 0), None)
    live_offset = offsets.get(live.fingerprint, 0) if live and live.fingerprint else 0
    return seen, LogPosition(live.inode if live else 0, live_offset, tuple(sorted(offsets.items())))
