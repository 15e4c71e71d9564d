"""Access-log rotation must never blind the reaper (issue 9, item 5).

Each test plays Traefik and logrotate with real files: Traefik holds its log open and appends to
whatever file that descriptor now is; logrotate renames, creates, compresses (``delaycompress``)
or copies and truncates. The request written at the dangerous moment must be seen, once.
"""

import gzip
import json
import os
import shutil
from datetime import datetime
from itertools import count

from servicehub import accesslog
from servicehub.accesslog import LogPosition, read_new_requests
from servicehub.reaper_state import ReaperState, load_state, save_state

_clock = count(1)


def line(router):
    """One Traefik JSON line; every line has its own nanosecond start time, as in real logs."""
    n = next(_clock)
    start = f"2026-11-26T12:{n // 60 % 60:02d}:{n % 60:02d}.{n:09d}Z"
    return (
        json.dumps(
            {
                "Duration": 1000,
                "RouterName": router,
                "StartUTC": start,
                "entryPointName": "web",
                "time": start[:19] + "Z",
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        + "\n"
    )


class Traefik:
    """Appends to its open file (O_APPEND) until it is told to reopen (USR1)."""

    def __init__(self, path):
        self.path = path
        self.fh = open(path, "a")

    def request(self, router):
        self.fh.write(line(router))
        self.fh.flush()

    def reopen(self):
        self.fh.close()
        self.fh = open(self.path, "a")


def rename(log, keep=14, compress=True):
    """logrotate with create + delaycompress: .N -> .N+1, the previous .1 gets compressed."""
    for n in range(keep - 1, 0, -1):
        for suffix in ("", ".gz"):
            old = log.with_name(f"{log.name}.{n}{suffix}")
            if old.exists():
                os.rename(old, log.with_name(f"{log.name}.{n + 1}{suffix}"))
    os.rename(log, log.with_name(log.name + ".1"))
    log.touch()  # create
    two = log.with_name(log.name + ".2")
    if compress and two.exists():  # delaycompress: compressed one rotation later
        with two.open("rb") as src, gzip.open(str(two) + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        shutil.copystat(two, str(two) + ".gz")
        two.unlink()


def test_a_rename_without_reopen_signal_keeps_reading_the_rotated_file(tmp_path):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("before@file")
    _, pos = read_new_requests(log, None)
    rename(log)  # ... and the USR1 never arrives: Traefik keeps writing to access.json.1
    traefik.request("first@file")
    seen, pos = read_new_requests(log, pos)
    assert set(seen) == {"first@file"}
    traefik.request("dangerous@file")  # after a run that already saw the new, empty access.json
    seen, pos = read_new_requests(log, pos)
    assert set(seen) == {"dangerous@file"}
    traefik.request("later@file")
    seen, pos = read_new_requests(log, pos)
    assert set(seen) == {"later@file"}
    assert read_new_requests(log, pos)[0] == {}


def test_b_run_between_rename_and_reopen_loses_no_line(tmp_path):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("before@file")
    _, pos = read_new_requests(log, None)
    rename(log)
    seen, pos = read_new_requests(log, pos)  # the reaper runs before postrotate's USR1
    assert seen == {}
    traefik.request("dangerous@file")  # still into access.json.1
    traefik.reopen()
    traefik.request("reopened@file")  # into the new access.json
    seen, pos = read_new_requests(log, pos)
    assert set(seen) == {"dangerous@file", "reopened@file"}
    assert read_new_requests(log, pos)[0] == {}


def test_c_two_rotations_between_runs_finish_the_compressed_old_file(tmp_path):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("before@file")
    _, pos = read_new_requests(log, None)
    traefik.request("dangerous@file")  # unread tail of the file that ends up as .2.gz
    rename(log)
    traefik.reopen()
    traefik.request("day2@file")  # the whole next file is unread: now access.json.1
    rename(log)
    traefik.reopen()
    traefik.request("day3@file")
    assert log.with_name("access.json.2.gz").exists()
    assert not log.with_name("access.json.2").exists()
    seen, pos = read_new_requests(log, pos)
    assert set(seen) == {"dangerous@file", "day2@file", "day3@file"}
    assert read_new_requests(log, pos)[0] == {}


def test_d_copytruncate_then_growth_past_the_old_offset(tmp_path):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    for _ in range(3):
        traefik.request("before@file")
    _, pos = read_new_requests(log, None)
    traefik.request("dangerous@file")  # unread when logrotate copies: only in the copy
    shutil.copyfile(log, log.with_name("access.json.1"))
    os.truncate(log, 0)  # same inode, new content from the top
    traefik.request("fresh@file")
    while log.stat().st_size <= pos.offset:
        traefik.request("filler@file")
    seen, pos = read_new_requests(log, pos)
    assert {"dangerous@file", "fresh@file"} <= set(seen)
    assert "before@file" not in seen
    assert read_new_requests(log, pos)[0] == {}


def test_old_state_file_is_a_position_in_the_live_file(tmp_path):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("before@file")
    # What an older reaper saved: inode and offset of the live file, nothing else.
    old = {"inode": log.stat().st_ino, "offset": log.stat().st_size}
    state_file = tmp_path / "reaper.json"
    state_file.write_text(json.dumps({"version": 1, "access_log": old, "sessions": {}}))
    pos = load_state(state_file).position
    assert pos == LogPosition(old["inode"], old["offset"])
    traefik.request("after@file")
    rename(log)  # a rotation between the old reaper's last run and the new one's first
    seen, pos = read_new_requests(log, pos)
    assert set(seen) == {"after@file"}
    save_state(state_file, ReaperState(position=pos))
    saved = json.loads(state_file.read_text())["access_log"]
    # An older reaper (a rollback) can still read it: the live file's inode and offset.
    assert (saved["inode"], saved["offset"]) == (log.stat().st_ino, 0)
    traefik.request("dangerous@file")  # no USR1 yet: into access.json.1
    seen, _ = read_new_requests(log, load_state(state_file).position)
    assert set(seen) == {"dangerous@file"}


def test_first_run_reads_the_live_file_only_then_follows_rotated_ones(tmp_path):
    log = tmp_path / "access.json"
    history = log.with_name("access.json.2.gz")
    with gzip.open(history, "wt") as fh:
        fh.write(line("last-week@file"))
    traefik = Traefik(log)
    traefik.request("yesterday@file")
    rename(log)  # first run ever between rename and reopen
    traefik.request("today@file")  # written to .1 before the first run
    seen, pos = read_new_requests(log, None)
    assert seen == {}  # as before: no state, the live file from its start, no history
    traefik.request("dangerous@file")  # still no USR1
    seen, pos = read_new_requests(log, pos)
    assert set(seen) == {"dangerous@file"}


def test_reaper_stopped_for_more_rotations_than_it_tracks_reads_what_is_left(tmp_path):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("before@file")
    _, pos = read_new_requests(log, None)
    for day in range(6):
        rename(log)
        traefik.reopen()
        traefik.request(f"day{day}@file")
    seen, pos = read_new_requests(log, pos)
    # Live, .1, .2.gz and .3.gz are newer than anything the position knows: all read.
    assert set(seen) == {"day5@file", "day4@file", "day3@file", "day2@file"}
    assert read_new_requests(log, pos)[0] == {}


def test_times_from_several_files_keep_the_latest(tmp_path):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("other@file")
    _, pos = read_new_requests(log, None)
    traefik.request("a@file")
    rename(log)
    traefik.reopen()
    traefik.request("a@file")
    newest = json.loads(log.read_text())["StartUTC"]
    seen, _ = read_new_requests(log, pos)
    expected = datetime.fromisoformat(newest[:26] + "+00:00").timestamp() + 1e-6
    assert abs(seen["a@file"] - expected) < 1e-5


def test_compression_in_progress_reads_the_plain_file(tmp_path):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("before@file")
    _, pos = read_new_requests(log, None)
    traefik.request("dangerous@file")
    rename(log)
    traefik.reopen()
    rename(log, compress=False)
    # gzip has written half of access.json.2.gz and not yet removed access.json.2.
    two = log.with_name("access.json.2")
    whole = gzip.compress(two.read_bytes())
    log.with_name("access.json.2.gz").write_bytes(whole[: len(whole) // 2])
    seen, pos = read_new_requests(log, pos)
    assert "dangerous@file" in seen
    two.unlink()
    log.with_name("access.json.2.gz").write_bytes(whole)  # gzip is done
    assert read_new_requests(log, pos)[0] == {}


def test_copytruncate_while_a_read_runs_reads_the_copy_again(tmp_path, monkeypatch):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("before@file")
    _, pos = read_new_requests(log, None)
    traefik.request("dangerous@file")
    for _ in range(20):
        traefik.request("later@file")
    opened = accesslog._open_all

    def copytruncate_after_opening(path, stack):
        files = opened(path, stack)  # fingerprints taken: now logrotate strikes
        shutil.copyfile(log, log.with_name("access.json.1"))
        os.truncate(log, 0)
        for _ in range(5):
            traefik.request("fresh@file")
        return files

    monkeypatch.setattr(accesslog, "_open_all", copytruncate_after_opening)
    seen, pos = read_new_requests(log, pos)  # read the new content as if it were the old
    monkeypatch.undo()
    seen, pos = read_new_requests(log, pos)
    assert {"dangerous@file", "fresh@file"} <= set(seen)


def test_damaged_compressed_file_is_read_as_far_as_it_goes(tmp_path, caplog):
    log = tmp_path / "access.json"
    traefik = Traefik(log)
    traefik.request("before@file")
    _, pos = read_new_requests(log, None)
    traefik.request("dangerous@file")
    rename(log)
    traefik.reopen()
    rename(log)
    traefik.request("today@file")
    gz = log.with_name("access.json.2.gz")
    gz.write_bytes(gz.read_bytes()[:-8])  # no trailer: the stream ends early
    seen, pos = read_new_requests(log, pos)
    assert {"dangerous@file", "today@file"} <= set(seen)
    assert "access.json.2.gz" in caplog.text
