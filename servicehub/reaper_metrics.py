"""The reaper's figures as a textfile for node-exporter's textfile collector.

The reaper is a oneshot: it is gone before any scraper could ask it, and handing its figures to
the daemon would make them depend on the daemon running. Node-exporter reads ``*.prom`` files
from a directory on every scrape; each run replaces the file atomically (``files.py``), so a
scrape never sees half a run. Counters go on across runs: each run adds to the totals it finds
in the file it replaces (a missing or unreadable file starts them again, which Prometheus
treats as a counter reset).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from .activity import Instant
from .config import Config
from .files import write_atomic
from .reaper_collect import Collected
from .reaper_report import Row

log = logging.getLogger("servicehub.reaper")
# A *_created written every run would say the counter is new.
disable_created_metrics()  # type: ignore[no-untyped-call]
CARRIED = ("servicehub_reaper_runs_total", "servicehub_reaper_decisions_total")


def previous_totals(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The counters of the file this run replaces, by name and labels."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    totals = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in CARRIED:
                    totals[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    except ValueError:  # damaged: start the counters again
        return {}
    return totals


def behind_bytes(access_log: Path, collected: Collected) -> int:
    """Bytes of the live access log the run did not read: written after its read, or left."""
    try:
        size = access_log.stat().st_size
    except OSError:
        return 0
    read = collected.position.offset if collected.position is not None else 0
    return max(0, size - read)


def render(
    config: Config,
    rows: Iterable[Row],
    collected: Collected,
    now: Instant,
    previous_run: float | None,
    duration: float,
    totals: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
) -> str:
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    runs = Counter("servicehub_reaper_runs", "Reaper runs that finished.", registry=registry)
    runs.inc(totals.get(("servicehub_reaper_runs_total", ()), 0) + 1)
    decisions = Counter(
        "servicehub_reaper_decisions",
        "Sessions decided, by app, action and the signal of their latest activity.",
        ["app", "action", "signal"],
        registry=registry,
    )
    for (name, labels), value in totals.items():
        if name == "servicehub_reaper_decisions_total":
            decisions.labels(**dict(labels)).inc(value)
    for row in rows:
        app = row.app if row.app in config.apps else "other"  # containers of removed apps
        signal = row.source if row.source != "-" else "none"
        decisions.labels(app, str(row.decision), signal).inc()
    gauge(
        "servicehub_reaper_last_run_timestamp_seconds",
        "When the last run started (unix time).",
        now.wall,
    )
    gauge("servicehub_reaper_run_duration_seconds", "How long the last run took.", duration)
    gauge(
        "servicehub_reaper_access_log_read_seconds",
        "Time the last run spent reading the access log.",
        collected.log_seconds,
    )
    gauge(
        "servicehub_reaper_access_log_behind_bytes",
        "Bytes of the live access log not read by the last run.",
        behind_bytes(config.traefik.access_log, collected),
    )
    gauge(
        "servicehub_reaper_access_log_behind_seconds",
        "How late the last run saw a request at most: seconds since the run before it.",
        max(0.0, now.wall - previous_run) if previous_run is not None else 0.0,
    )
    return generate_latest(registry).decode("utf-8")


def publish(
    config: Config,
    rows: Iterable[Row],
    collected: Collected,
    now: Instant,
    previous_run: float | None,
    duration: float,
) -> None:
    """Write the run's figures; a failure to write is logged and never fails the run."""
    path = config.metrics.textfile
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = render(config, rows, collected, now, previous_run, duration, previous_totals(path))
        write_atomic(path, text, mode=0o644)  # node-exporter runs as another account
    except OSError as exc:
        log.error("cannot write the reaper's metrics %s: %s", path, exc)
