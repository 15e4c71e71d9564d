"""Session locks: exclusive across open files and processes, never held by the dead."""

import asyncio
import subprocess
import sys

from servicehub.locks import SessionLocks


def test_one_holder_at_a_time_per_session(tmp_path):
    locks = SessionLocks(tmp_path / "locks")
    locks.prepare()
    first = locks.try_acquire("whoami", "alice-aaaa")
    assert first is not None
    assert locks.try_acquire("whoami", "alice-aaaa") is None
    other = locks.try_acquire("whoami", "bob-bbbb")  # other sessions are not blocked
    assert other is not None
    first.release()
    again = locks.try_acquire("whoami", "alice-aaaa")
    assert again is not None
    again.release()
    other.release()


def test_another_process_holding_the_lock_blocks_until_it_exits(tmp_path):
    locks = SessionLocks(tmp_path / "locks")
    locks.prepare()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys; f=open(sys.argv[1],'a'); fcntl.flock(f, fcntl.LOCK_EX);"
            " print('held', flush=True); sys.stdin.read()",
            str(locks.path("whoami", "alice-aaaa")),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert locks.try_acquire("whoami", "alice-aaaa") is None
    finally:
        holder.stdin.close()  # the holder exits; the kernel drops its lock
        holder.wait()
    held = locks.try_acquire("whoami", "alice-aaaa")
    assert held is not None
    held.release()


async def test_acquire_waits_for_the_release(tmp_path):
    locks = SessionLocks(tmp_path / "locks")
    locks.prepare()
    first = locks.try_acquire("a", "s")
    waiting = asyncio.ensure_future(locks.acquire("a", "s", timeout=30))
    await asyncio.sleep(0)
    assert not waiting.done()
    first.release()
    second = await waiting
    assert second is not None
    second.release()


async def test_hold_goes_on_without_the_lock_after_the_timeout(tmp_path):
    locks = SessionLocks(tmp_path / "locks")
    locks.prepare()
    with locks.try_acquire("a", "s"):
        async with locks.hold("a", "s", timeout=0) as got:
            assert got is False
    async with locks.hold("a", "s", timeout=0) as got:
        assert got is True
    missing = SessionLocks(tmp_path / "nope" / "locks")  # never prepared: no lock, no crash
    async with missing.hold("a", "s", timeout=0) as got:
        assert got is False
