"""The reaper's decisions as pure functions: the clock is whatever the test passes."""

import pytest

from servicehub.activity import (
    Activity,
    Instant,
    Timeline,
    background_level,
    background_note,
    decide,
    latest,
    parse_report,
    remember_rate,
    sample_time,
    usage_activity,
    usage_between,
)
from servicehub.config import parse_config
from servicehub.counters import Counters
from servicehub.times import human

T0 = 1_800_000_000.0  # the spawn
MIN, HOUR = 60.0, 3600.0


def app(**overrides):
    data = {"image": "x", "idle_timeout": "1h", "max_lifetime": "1d", "grace": "5m", **overrides}
    return parse_config({"apps": {"a": data}}).apps["a"]


def test_requests_inside_the_window_keep_the_session():
    last = Activity(T0 + 2 * HOUR, "access-log")
    d = decide(app(), T0, True, last, now=T0 + 2 * HOUR + 59 * MIN)
    assert (d.action, d.kind) == ("keep", "active")
    assert d.last == last and d.idle_for == 59 * MIN
    assert d.reason == "active 59m00s ago (access-log)"


def test_no_activity_reaps_after_the_timeout_counted_from_the_last_one():
    last = Activity(T0 + 10 * MIN, "network")
    assert not decide(app(), T0, True, last, now=T0 + 69 * MIN).reap
    d = decide(app(), T0, True, last, now=T0 + 70 * MIN)
    assert (d.action, d.kind) == ("reap", "idle")
    assert d.reason == "idle for 1h00m, idle_timeout is 1h00m"


def test_a_session_never_used_counts_from_its_spawn():
    d = decide(app(), T0, True, None, now=T0 + 30 * MIN)
    assert d.action == "keep" and d.last == Activity(T0, "spawn")
    assert decide(app(), T0, True, None, now=T0 + HOUR).reap


def test_activity_before_the_spawn_belongs_to_an_older_container():
    d = decide(app(), T0, True, Activity(T0 - HOUR, "access-log"), now=T0 + MIN * 10)
    assert d.last.source == "spawn"


def test_grace_keeps_a_fresh_session_until_it_ends():
    # grace is at most idle_timeout (config.py refuses more): it never stretches the timeout.
    a = app(idle_timeout="10m", grace="10m")
    d = decide(a, T0, True, None, now=T0 + 9 * MIN)
    assert (d.action, d.kind) == ("keep", "grace")
    assert decide(a, T0, True, None, now=T0 + 10 * MIN).reap


def test_max_lifetime_wins_over_activity():
    d = decide(app(), T0, True, Activity(T0 + 24 * HOUR, "cpu"), now=T0 + 24 * HOUR)
    assert (d.action, d.kind) == ("reap", "lifetime")
    assert "max_lifetime is 1d00h" in d.reason


def test_a_stopped_container_is_reaped():
    assert decide(app(), T0, False, None, now=T0 + 1).kind == "stopped"


def test_a_report_from_the_future_counts_as_now():
    now = T0 + 2 * HOUR
    d = decide(app(), T0, True, Activity(now + HOUR, "endpoint"), now=now)
    assert d.last == Activity(now, "endpoint") and d.idle_for == 0


def test_latest_prefers_the_newest_and_the_first_on_a_tie():
    a, b = Activity(1, "x"), Activity(2, "y")
    assert latest(None, a, b, None) == b
    assert latest(Activity(2, "first"), b) == Activity(2, "first")
    assert latest() is None


def sample(read, net, cpu_seconds):
    return Counters(read=read, net_bytes=net, cpu_ns=int(cpu_seconds * 1e9))


def test_traffic_above_the_threshold_is_activity_at_the_run_time():
    a = app(activity_bytes="8k")
    busy = usage_between(sample(T0, 1000, 0), sample(T0 + 60, 1000 + 9000, 0))
    assert usage_activity(a, busy, now=T0 + 99) == Activity(T0 + 99, "network")
    pings = usage_between(sample(T0, 1000, 0), sample(T0 + 60, 1000 + 600, 0))
    assert usage_activity(a, pings, now=T0 + 99) is None


def test_the_byte_threshold_scales_with_the_time_between_runs():
    # An hour without a run: an hour of keep-alive pings is still no activity.
    a = app(activity_bytes="8k")
    hour_of_pings = usage_between(sample(T0, 0, 0), sample(T0 + HOUR, 60 * 600, 0))
    assert usage_activity(a, hour_of_pings, now=T0) is None
    short = usage_between(sample(T0, 0, 0), sample(T0 + 2, 8 * 1024 + 1, 0))
    assert usage_activity(a, short, now=T0) is not None


# Measured through the hub (docs/reaper.md, "Background traffic"): JupyterLab 4 with a notebook
# open and nobody touching it moves 12.3-12.9 kB every 10 s and 4.8 kB more once a minute (its
# polls), 78-83 kB a minute; a minute may hold one 10-s round more or less. Running one cell
# adds about 10 kB; an idle websocket's ping and pong about 220 bytes.
TAB_IDLE = [80_400, 78_000, 80_900, 82_800, 79_700, 80_100]


def minute(net):
    return usage_between(sample(T0, 0, 0), sample(T0 + 60, net, 0))


def rates_before(history, keep=5):
    rates: tuple[float, ...] = ()
    for net in history:
        rates = remember_rate(rates, minute(net), keep)
    return rates


def test_an_open_tab_that_only_polls_is_background_after_its_first_minute():
    a = app(activity_bytes="8k")
    assert usage_activity(a, minute(TAB_IDLE[0]), now=T0) is not None  # nothing known yet
    for i in range(1, len(TAB_IDLE)):
        rates = rates_before(TAB_IDLE[:i])
        assert usage_activity(a, minute(TAB_IDLE[i]), now=T0, rates=rates) is None, i


def test_a_cell_run_on_top_of_the_polls_is_activity():
    a = app(activity_bytes="8k")
    rates = rates_before(TAB_IDLE)
    found = usage_activity(a, minute(TAB_IDLE[-1] + 10_000), now=T0 + 5, rates=rates)
    assert found == Activity(T0 + 5, "network")


def test_a_person_every_other_minute_stands_out_against_the_quiet_minutes():
    a = app(activity_bytes="8k")
    history = [80_000, 91_000, 80_500, 90_000, 80_200]  # a cell every two minutes
    assert usage_activity(a, minute(90_500), now=T0, rates=rates_before(history)) is not None


def test_many_sockets_that_only_ping_are_one_steady_background():
    # 19 sockets, a ping and its pong (about 220 bytes) every 30 s each: 8.4 kB a minute,
    # above activity_bytes on its own, but the same every minute.
    a = app(activity_bytes="8k")
    pings = 19 * 2 * 220
    assert usage_activity(a, minute(pings), now=T0, rates=rates_before([pings] * 3)) is None


def test_small_irregular_messages_count_when_activity_bytes_is_set_for_them():
    # Pings (440 bytes a minute) and 100-byte messages (about 400 bytes on the wire each, with
    # their answer) at irregular times: some minutes carry several, some none.
    a = app(activity_bytes="1k")
    history = [440, 440 + 400, 440, 440 + 2 * 400]
    assert usage_activity(a, minute(440 + 4 * 400), now=T0, rates=rates_before(history)) is not None
    assert usage_activity(a, minute(440 + 400), now=T0, rates=rates_before(history)) is None


def test_the_background_level_is_the_quietest_of_the_last_runs():
    assert background_level(()) == 0
    assert background_level((5.0, 3.0, 9.0)) == 3.0
    assert rates_before([600, 120, 300], keep=2) == (120.0, 300.0)
    assert rates_before([600, 120, 300], keep=0) == ()  # background_windows: 0, the old rule
    assert remember_rate((1.0, 2.0), None, 5) == (1.0, 2.0)  # a run without counters


def test_without_a_background_level_the_rule_is_the_plain_threshold():
    a = app(activity_bytes="8k", background_windows=0)
    rates = rates_before(TAB_IDLE, keep=a.background_windows)
    assert usage_activity(a, minute(TAB_IDLE[-1]), now=T0, rates=rates) is not None


def test_the_reason_says_what_was_seen_and_not_counted():
    rates = rates_before(TAB_IDLE)
    idle = minute(TAB_IDLE[-1])
    assert background_note(idle, rates, True, None) == (
        "not counted: background requests and traffic 80.1 kB/min, its level 78.0 kB/min"
    )
    assert background_note(idle, (), False, None) == "not counted: traffic 80.1 kB/min"
    counted = Activity(T0, "network")
    assert background_note(idle, rates, False, counted) == ""
    assert background_note(None, rates, False, None) == ""


def test_cpu_counts_only_when_configured():
    busy = usage_between(sample(T0, 0, 0), sample(T0 + 10, 0, 5))  # half a core
    assert busy is not None and busy.cpu_cores == pytest.approx(0.5)
    assert usage_activity(app(cpu_counts=True), busy, now=T0) == Activity(T0, "cpu")
    assert usage_activity(app(cpu_counts=False), busy, now=T0) is None
    assert usage_activity(app(cpu_threshold=0.6), busy, now=T0) is None


def test_counters_of_another_container_or_the_same_sample_are_no_usage():
    assert usage_between(None, sample(T0, 1, 1)) is None
    assert usage_between(sample(T0, 5, 5), sample(T0, 9, 9)) is None  # same read time
    assert usage_between(sample(T0, 5000, 5), sample(T0 + 60, 10, 0)) is None  # restarted


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"last_activity": T0}, T0),
        ({"last_activity": int(T0)}, T0),
        ({"last_activity": "2027-01-15T08:00:00Z"}, T0),
        ({"last_activity": "2027-01-15T08:00:00"}, T0),  # naive: UTC
        ({"last_activity": "2027-01-15T09:00:00+01:00"}, T0),
        ({"last_activity": T0 + HOUR}, T0 + 10),  # future: now
        ({"last_activity": "yesterday"}, None),
        ({"last_activity": True}, None),
        ({"last_activity": None}, None),
        ({"last_activity": float("nan")}, None),
        ({}, None),
        ([T0], None),
    ],
)
def test_activity_endpoint_reports(body, expected):
    found = parse_report(body, now=T0 + 10)
    assert (found.time if found else None) == expected
    if found:
        assert found.source == "endpoint"


def test_human_durations():
    assert [human(s) for s in (0, 42, 187, 7500, 90000)] == ["0s", "42s", "3m07s", "2h05m", "1d01h"]


def test_new_activity_is_placed_within_the_time_since_the_previous_run():
    now = Instant(wall=T0 + HOUR, mono=500.0, boot="b")
    line = Timeline(now, window=60.0)
    # Stamped before a forward step of the wall clock: still within the last minute.
    assert line.place(T0 + 30, new=True) == 440.0
    assert line.place(T0 + HOUR - 10, new=True) == 490.0  # within the window: as stamped
    assert line.place(T0 + 30, new=False) == 500.0 - (HOUR - 30)  # not known to be new
    assert line.place(T0 + 2 * HOUR, new=True) == 500.0  # ahead of the clock: now
    assert Timeline(now, window=None).place(T0 + 30, new=True) == 500.0 - (HOUR - 30)
    assert line.wall(440.0) == T0 + HOUR - 60


def test_a_counter_sample_is_timed_within_its_call():
    before, after = Instant(T0, 100.0, "b"), Instant(T0 + 2, 102.0, "b")
    assert sample_time(T0 + 1.5, before, after) == 101.5
    assert sample_time(T0 - HOUR, before, after) == 100.0  # the wall clock stepped meanwhile
    assert sample_time(T0 + HOUR, before, after) == 102.0
