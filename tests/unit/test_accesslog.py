import json
import os

from servicehub import accesslog
from servicehub.accesslog import LogPosition, read_new_requests


def line(router, when, user="u"):
    # Shaped like Traefik's: compact JSON, keys sorted.
    return (
        json.dumps(
            {
                "ClientAddr": "127.0.0.1:1",
                "DownstreamStatus": 200,
                "RequestPath": "/x",
                "RouterName": router,
                "StartUTC": when,
                "entryPointName": "web",
                "level": "info",
                "msg": "",
                "request_X-Servicehub-User": user,
                "time": when,
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        + "\n"
    )


T1, T2, T3 = "2026-11-26T12:00:01Z", "2026-11-26T12:00:02Z", "2026-11-26T12:00:03Z"


def ts(value):
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_reads_last_time_per_router_and_then_only_new_lines(tmp_path):
    log = tmp_path / "access.json"
    log.write_text(line("a@file", T1) + line("b@file", T2) + line("a@file", T3))
    seen, pos = read_new_requests(log, None)
    assert seen == {"a@file": ts(T3), "b@file": ts(T2)}
    assert pos.offset == log.stat().st_size
    assert read_new_requests(log, pos) == ({}, pos)
    with log.open("a") as fh:
        fh.write(line("b@file", T3))
    seen, pos = read_new_requests(log, pos)
    assert seen == {"b@file": ts(T3)}


def test_partial_last_line_waits_for_its_end(tmp_path):
    log = tmp_path / "access.json"
    full = line("a@file", T1)
    log.write_text(full + line("b@file", T2)[:40])
    seen, pos = read_new_requests(log, None)
    assert seen == {"a@file": ts(T1)} and pos.offset == len(full)
    with log.open("a") as fh:
        fh.write(line("b@file", T2)[40:])
    seen, _ = read_new_requests(log, pos)
    assert seen == {"b@file": ts(T2)}


def test_rotation_by_rename_loses_nothing_and_counts_nothing_twice(tmp_path):
    log = tmp_path / "access.json"
    log.write_text(line("a@file", T1))
    _, pos = read_new_requests(log, None)
    with log.open("a") as fh:  # written after our read, before the rotation
        fh.write(line("b@file", T2))
    os.rename(log, tmp_path / "access.json.1")
    log.write_text(line("c@file", T3))
    seen, pos = read_new_requests(log, pos)
    assert seen == {"b@file": ts(T2), "c@file": ts(T3)}
    assert read_new_requests(log, pos)[0] == {}


def test_truncation_restarts_from_the_top(tmp_path):
    log = tmp_path / "access.json"
    log.write_text(line("a@file", T1) * 3)
    _, pos = read_new_requests(log, None)
    log.write_text(line("b@file", T2))  # same inode, shorter
    seen, _ = read_new_requests(log, pos)
    assert seen == {"b@file": ts(T2)}


def test_request_data_cannot_fake_a_router_or_time(tmp_path):
    log = tmp_path / "access.json"
    evil = '","RouterName":"victim@file","time":"2099-01-01T00:00:00Z'
    log.write_text(line("a@file", T1, user=evil) + "not json at all\n")
    seen, _ = read_new_requests(log, None)
    assert seen == {"a@file": ts(T1)}


def test_missing_log_keeps_the_position(tmp_path):
    pos = LogPosition(1, 10)
    assert read_new_requests(tmp_path / "nope.json", pos) == ({}, pos)
    assert LogPosition.from_json(pos.to_json()) == pos
    assert LogPosition.from_json({"inode": "x"}) is None


def test_exact_time_from_start_and_duration(tmp_path):
    # Traefik's "time" has whole seconds; StartUTC + Duration (ns) is the request's exact end.
    fields = {
        "Duration": 1_500_000_000,
        "RouterName": "a@file",
        "StartUTC": "2026-11-26T12:00:01.123456789Z",
        "request_X-Servicehub-User": '","Duration":9,"StartUTC":"2099-01-01T00:00:00Z',
        "time": "2026-11-26T12:00:02Z",
    }
    log = tmp_path / "access.json"
    log.write_text(json.dumps(fields, separators=(",", ":"), sort_keys=True) + "\n")
    seen, _ = read_new_requests(log, None)
    assert seen["a@file"] == ts("2026-11-26T12:00:01.123456Z") + 1.5


def test_a_cut_off_router_name_names_no_router(tmp_path):
    """A line broken inside the router's name (a crash mid-write) gives no router, and the
    name search does not run on into the next line's quotes."""
    log = tmp_path / "access.json"
    log.write_text('{"Duration":1,"RouterName":"cut\n' + line("a@file", T1))
    seen, _ = read_new_requests(log, None)
    assert seen == {"a@file": ts(T1)}


def test_lines_longer_than_the_read_buffer_are_read_whole(tmp_path, monkeypatch):
    """The reader reuses one buffer of CHUNK bytes; a line that does not fit makes it grow."""
    monkeypatch.setattr(accesslog, "CHUNK", 64)
    log = tmp_path / "access.json"
    log.write_text(
        line("a@file", T1) + line("b@file", T2, user="x" * 300) + line("c@file", T3)[:50]
    )
    seen, pos = read_new_requests(log, None)
    assert seen == {"a@file": ts(T1), "b@file": ts(T2)}
    with log.open("a") as fh:
        fh.write(line("c@file", T3)[50:])
    assert read_new_requests(log, pos)[0] == {"c@file": ts(T3)}
