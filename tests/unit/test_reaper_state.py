import json

from servicehub.accesslog import LogPosition
from servicehub.activity import Activity
from servicehub.counters import Counters
from servicehub.reaper_state import ReaperState, SessionRecord, load_state, save_state


def test_state_round_trips_and_is_replaced_atomically(tmp_path):
    path = tmp_path / "state" / "reaper.json"
    state = ReaperState(
        position=LogPosition(7, 1234),
        journal_cursor="s=abc",
        last_run=1.5,
        sessions={
            "whoami/alice-x": SessionRecord(
                "c1",
                Activity(10.0, "cpu"),
                Counters(9.5, 100, 200),
                last_mono=4.0,
                spawn_mono=1.0,
                report=8.0,
            ),
            "whoami/bob-y": SessionRecord("c2", None, None),
        },
        boot="b1",
        last_run_mono=4.5,
    )
    save_state(path, state)
    assert load_state(path) == state
    assert [p.name for p in path.parent.iterdir()] == ["reaper.json"]  # no temp file left
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_missing_or_broken_state_starts_over(tmp_path):
    assert load_state(tmp_path / "none.json") == ReaperState()
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "sessions": ')
    assert load_state(broken) == ReaperState()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"version": 99, "sessions": {"a/b": {"container_id": "c"}}}))
    assert load_state(other) == ReaperState()
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"version": 1, "sessions": {"a/b": {"container_id": 5}}}))
    assert load_state(odd).sessions == {}


def test_a_state_from_before_monotonic_times_loads_without_them(tmp_path):
    path = tmp_path / "reaper.json"
    record = {"container_id": "c", "last_activity": {"time": 5.0, "source": "cpu"}}
    path.write_text(json.dumps({"version": 1, "last_run": 9.0, "sessions": {"a/b": record}}))
    state = load_state(path)
    assert (state.boot, state.last_run_mono, state.last_run) == (None, None, 9.0)
    (loaded,) = state.sessions.values()
    assert loaded.last == Activity(5.0, "cpu")
    assert (loaded.last_mono, loaded.spawn_mono, loaded.report) == (None, None, None)
