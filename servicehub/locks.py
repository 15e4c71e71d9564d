"""One lock per session, shared by the daemon and the reaper across processes.

``flock`` on ``<state_dir>/locks/<app>.<slug>.lock``. The reaper holds it while it removes a
session; the daemon holds it while it spawns or re-routes that session. The reaper never waits
(a busy session is left for its next run); the daemon waits, bounded, for a removal to finish
and then spawns on a free name. The kernel drops a lock when its holder dies, so a crash can
never leave a session locked. Lock files are tiny and kept: deleting one while another process
waits on it would let two holders in.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from .session_key import SessionKey

log = logging.getLogger("servicehub.locks")
# How long a spawn or a person's stop waits for another holder of a session's lock. The reaper
# holds it for one container removal and one route file, so this is long.
LOCK_TIMEOUT = 30.0


class Held:
    """An acquired lock; release it (or use it as a context manager)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class SessionLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def of_hub(cls, state_dir: Path) -> SessionLocks:
        """The locks the daemon, the reaper and the CLI share: ``<state_dir>/locks``."""
        return cls(state_dir / "locks")

    def path(self, app: str, slug: str) -> Path:
        return self.directory / SessionKey(app, slug).lock_file

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)

    def try_acquire(self, app: str, slug: str) -> Held | None:
        """The lock now, or None if another process (or open file) holds it."""
        fd = os.open(self.path(app, slug), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return Held(fd)

    async def acquire(self, app: str, slug: str, timeout: float) -> Held | None:
        """Poll for the lock (10 ms, backing off to 200 ms); None after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = 0.01
        while True:
            held = self.try_acquire(app, slug)
            if held is not None or loop.time() >= deadline:
                return held
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.2)

    @contextlib.asynccontextmanager
    async def hold(self, app: str, slug: str, timeout: float) -> AsyncIterator[bool]:
        """Hold the session's lock for the block; yields False (and goes on) if it could not be
        had within ``timeout`` or the lock directory is unusable: never block a user for ever."""
        try:
            held = self.try_acquire(app, slug)
            if held is None:
                log.info("session app=%s slug=%s is locked (being removed); waiting", app, slug)
                held = await self.acquire(app, slug, timeout)
                if held is None:
                    log.warning(
                        "session lock app=%s slug=%s still held after %g s; going on",
                        app,
                        slug,
                        timeout,
                    )
        except OSError as exc:
            log.warning(
                "session lock %s unusable (%s); going on without it", self.path(app, slug), exc
            )
            held = None
        try:
            yield held is not None
        finally:
            if held is not None:
                held.release()
