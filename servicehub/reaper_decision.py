"""The reaper's decision for one session: its signals on the monotonic clock, then ``decide``.

Pure: it takes what the run collected (``reaper_collect.Collected``) and the previous run's
record of the session, and gives the session's result (``Judged``): the decision and the record
the next run starts from. The judgement itself is ``activity.decide``; this module places every
signal on the monotonic clock first (docs/reaper.md, "Clocks").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import overload

from .activity import (
    Activity,
    Decision,
    Instant,
    Timeline,
    Verdict,
    Why,
    background_note,
    decide,
    latest,
    remember_rate,
    usage_activity,
    usage_between,
)
from .config import Config
from .counters import Counters
from .reaper_collect import Collected
from .reaper_state import ReaperState, SessionRecord
from .session_info import SessionInfo
from .session_key import PROVIDER, SessionKey


# Not frozen, though never changed: built thousands of times a reaper run (docs/benchmarks.md).
@dataclass(slots=True)
class Judged:
    """One session's result of a run. ``decision`` is on today's wall clock (for people); None
    for a session the reaper leaves alone (``skipped`` says why, ``age`` is its age)."""

    info: SessionInfo
    decision: Decision | None
    record: SessionRecord  # what the next run starts from
    skipped: str = ""
    age: float = 0.0


def judge(
    config: Config,
    info: SessionInfo,
    state: ReaperState,
    collected: Collected,
    timeline: Timeline,
) -> Judged:
    now = timeline.now
    key = info.key
    record = state.sessions.get(key.state_key)
    if record is not None and record.container_id != info.container_id:
        record = None  # an older container of this session: its counters do not apply
    # The record's monotonic times count only on the boot (and clock) they were read on.
    kept = record if record is not None and timeline.window is not None else None
    spawn = (
        kept.spawn_mono
        if kept is not None and kept.spawn_mono is not None
        else timeline.place(_created(info), new=record is None)
    )
    app = config.apps.get(info.app)
    if app is None:
        return Judged(
            info,
            None,
            SessionRecord(info.container_id, None, None, None, spawn, logged=said(None)),
            skipped="app not in the config: left alone",
            age=max(0.0, now.mono - spawn),
        )
    sample = collected.samples.get(info.container_id)
    report = collected.reports.get(info.container_id)
    usage = usage_between(kept.counters if kept else None, sample)
    rates = kept.rates if kept else ()
    signals = [
        _remembered(record, kept, timeline),
        _placed(_logged(collected.requests, config.hub, key), timeline, state.position is not None),
        _placed(
            _journaled(collected, key),
            timeline,
            state.journal_cursor is not None,
        ),
        _reported(report, record, kept, timeline),
        traffic := usage_activity(app, usage, now.mono, rates),
    ]
    # All monotonic; activity before the spawn was an older container's.
    found = latest(*[s for s in signals if s is not None and s.time >= spawn])
    decision = decide(app, spawn, info.running, found, now.mono)
    if decision.kind in (Why.IDLE, Why.ACTIVE):
        polled = f"{key.background_router(config.hub)}@{PROVIDER}" in collected.requests
        note = background_note(usage, rates, polled, traffic)
        if note:  # why the open tab or the pinging socket did not keep it
            decision = replace(decision, reason=f"{decision.reason}; {note}")
    new_record = SessionRecord(
        container_id=info.container_id,
        # For people (the table, the journal, ``servicehub sessions``): today's wall clock.
        last=_on_wall_clock(found, timeline),
        counters=_baseline(info, collected, kept),
        last_mono=found.time if found else None,
        spawn_mono=spawn,
        report=report.time if report else (record.report if record else None),
        rates=remember_rate(rates, usage, app.background_windows),
        logged=said(decision),
    )
    return Judged(info, _shown(decision, timeline), new_record)


def said(decision: Decision | None) -> str:
    """What the row of this decision says in short (``Row.said``), remembered in the record:
    the next run logs a keep or skip only when it says something else."""
    if decision is None:
        return f"{Verdict.SKIP}:-"
    return f"{decision.action}:{decision.last.source}"


def _baseline(
    info: SessionInfo, collected: Collected, kept: SessionRecord | None
) -> Counters | None:
    """The counter sample the next run's difference starts from."""
    if info.container_id in collected.after_asking:
        # Sampled after the reaper's request; if that failed, no baseline (one run
        # without a rate) rather than one that would count the request.
        return collected.after_asking[info.container_id]
    return collected.samples.get(info.container_id) or (kept.counters if kept else None)


def _created(info: SessionInfo) -> float:
    return info.created.timestamp()


def _shown(decision: Decision, timeline: Timeline) -> Decision:
    """The decision with its last activity on today's wall clock, for people. Built, not
    ``dataclasses.replace``d: that took a tenth of a decision's time."""
    d = decision
    return Decision(d.action, d.kind, d.reason, _on_wall_clock(d.last, timeline), d.idle_for, d.age)


def _logged(seen: dict[str, float], hub: str, key: SessionKey) -> Activity | None:
    when = seen.get(key.provider_router(hub))
    return Activity(when, "access-log") if when is not None else None


def _journaled(collected: Collected, key: SessionKey) -> Activity | None:
    when = collected.journaled.get(key)
    return Activity(when, "journal") if when is not None else None


def window(state: ReaperState, now: Instant) -> float | None:
    """Monotonic seconds since the previous run, if it ran on this boot (and its clock)."""
    if state.boot != now.boot or state.last_run_mono is None or state.last_run_mono > now.mono:
        return None
    return now.mono - state.last_run_mono


def _placed(found: Activity | None, timeline: Timeline, new: bool) -> Activity | None:
    """A wall-clock signal on the monotonic clock (see ``Timeline.place``)."""
    if found is None:
        return None
    return Activity(timeline.place(found.time, new=new), found.source)


def _remembered(
    record: SessionRecord | None, kept: SessionRecord | None, timeline: Timeline
) -> Activity | None:
    """The last activity of earlier runs: its monotonic time when it is of this boot, else
    its wall-clock time (a reboot, a state from before monotonic times were kept)."""
    if kept is not None and kept.last is not None and kept.last_mono is not None:
        return Activity(kept.last_mono, kept.last.source)
    if record is not None and record.last is not None:
        return Activity(timeline.place(record.last.time, new=False), record.last.source)
    return None


def _reported(
    report: Activity | None,
    record: SessionRecord | None,
    kept: SessionRecord | None,
    timeline: Timeline,
) -> Activity | None:
    """The app's report. The same report as the previous run's is no news: its time is already
    in the record. A report is known to be from after the previous run when the container is
    new since then or the report changed."""
    if report is None:
        return None
    previous = record.report if record is not None else None
    if kept is not None and previous == report.time:
        return None
    new = record is None or (previous is not None and previous != report.time)
    return Activity(timeline.place(report.time, new=new), report.source)


@overload
def _on_wall_clock(found: Activity, timeline: Timeline) -> Activity: ...
@overload
def _on_wall_clock(found: None, timeline: Timeline) -> None: ...
def _on_wall_clock(found: Activity | None, timeline: Timeline) -> Activity | None:
    return Activity(timeline.wall(found.time), found.source) if found is not None else None
