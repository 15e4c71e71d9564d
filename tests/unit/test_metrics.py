"""The daemon's and the reaper's metrics: updates, reason codes, labels, the config section."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from servicehub import metrics
from servicehub.activity import Instant, Verdict
from servicehub.config import ConfigError, parse_config
from servicehub.reaper_collect import Collected
from servicehub.reaper_metrics import previous_totals, publish
from servicehub.reaper_report import Row
from servicehub.session_state import Session, State

ROOT = Path(__file__).resolve().parents[2]


def config(**metrics_section):
    data = {
        "apps": {"nb": {"image": "x:1", "limits": {"memory": "1g"}}},
        "metrics": metrics_section,
    }
    return parse_config(data)


def sample(name, **labels):
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_spawn_hooks_count_by_app():
    session = Session(app="nb", slug="a-x", user="alice")
    session.started = time.monotonic() - 2.0
    before = sample("servicehub_spawn_ready_seconds_count", app="nb")
    metrics.spawn_started("nb")
    metrics.spawn_routed(session)
    metrics.spawn_ready(session)
    assert sample("servicehub_spawn_ready_seconds_count", app="nb") == before + 1
    assert sample("servicehub_spawn_ready_seconds_bucket", app="nb", le="1.0") == 0
    assert sample("servicehub_spawn_routed_seconds_bucket", app="nb", le="3.0") >= 1


def test_a_reroute_is_not_a_spawn():
    session = Session(app="rr", slug="a-x", user="alice", state=State.ROUTING, routed=True)
    metrics.spawn_routed(session)
    assert sample("servicehub_spawn_routed_seconds_count", app="rr") == 0


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("the image x:1 is not available on this hub", "image_missing"),
        ("the app stopped while starting (exit code 3)", "app_exited"),
        ("the app did not answer within 60 s", "start_timeout"),
        ("the proxy did not pick up the route to your app", "route_timeout"),
        ("an internal error occurred (KeyError)", "internal"),
        ("alice's very own words", "other"),
    ],
)
def test_failure_reasons_are_codes_not_text(text, code):
    before = sample("servicehub_spawn_failures_total", app="nb", reason=code)
    metrics.spawn_failed("nb", text)
    assert sample("servicehub_spawn_failures_total", app="nb", reason=code) == before + 1


def _strings(path: str, call: str) -> list[str]:
    """The first argument of every ``call(...)`` with a literal string in ``path``."""
    found = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == call and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(first.value)
            if isinstance(first, ast.JoinedStr) and isinstance(first.values[0], ast.Constant):
                found.append(str(first.values[0].value))
    return found


def test_every_spawn_failure_text_has_a_code():
    texts = _strings("servicehub/spawner.py", "SpawnError")
    texts += _strings("servicehub/backend.py", "SpawnError")
    assert texts
    assert [t for t in texts if metrics.failure_reason(t) == "other"] == []


def test_every_refusal_has_a_code():
    refusals = []
    for node in ast.walk(ast.parse((ROOT / "servicehub/server.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Refused":
            status, title = (a.value for a in node.args[:2])  # type: ignore[attr-defined]
            refusals.append((status, title))
    assert refusals
    assert [r for r in refusals if r not in metrics.REFUSAL_REASONS] == []
    before = sample("servicehub_requests_refused_total", reason="proxy_secret")
    metrics.refused(403, "Not through the front door")
    assert sample("servicehub_requests_refused_total", reason="proxy_secret") == before + 1


def collect(cfg, sessions, available=8 * 2**30):
    collector = metrics.SessionCollector(cfg, lambda: sessions, "hub1", lambda: available)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_sessions_by_app_and_state_and_memory_reserved():
    cfg = config()
    sessions = [
        Session(app="nb", slug="a-1", user="alice", state=State.READY),
        Session(app="nb", slug="b-1", user="bob", state=State.STARTING),
        Session(app="nb", slug="c-1", user="carol", state=State.FAILED),
    ]
    got = collect(cfg, sessions)
    assert got[("servicehub_sessions", (("app", "nb"), ("state", "ready")))] == 1
    assert got[("servicehub_sessions", (("app", "nb"), ("state", "failed")))] == 1
    assert got[("servicehub_sessions", (("app", "nb"), ("state", "routing")))] == 0
    assert got[("servicehub_memory_reserved_bytes", (("node", "hub1"),))] == 2 * 2**30
    assert got[("servicehub_memory_available_bytes", (("node", "hub1"),))] == 8 * 2**30
    assert not any("alice" in str(k) or "a-1" in str(k) for k in got)


def test_per_user_labels_only_when_turned_on():
    sessions = [Session(app="nb", slug="a-1", user="alice", state=State.READY)]
    assert not any(k[0] == "servicehub_user_session" for k in collect(config(), sessions))
    got = collect(config(per_user=True), sessions)
    key = ("servicehub_user_session", (("app", "nb"), ("slug", "a-1"), ("state", "ready")))
    assert got[key] == 1
    assert not any("alice" in str(k) for k in got)  # the slug, never the raw id


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"host": "0.0.0.0"}, "metrics.host"),
        ({"port": 8090}, "metrics.port"),  # the daemon's own port: Traefik routes there
        ({"textfile": "/var/lib/x/reaper.txt"}, "metrics.textfile"),
        ({"colour": "red"}, "metrics.colour"),
    ],
)
def test_bad_metrics_config_names_the_key(section, key):
    with pytest.raises(ConfigError) as exc:
        config(**section)
    assert exc.value.key == key


def test_host_memory_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       2048 kB\nMemFree: 1 kB\n")
    assert metrics.host_memory_bytes(str(meminfo)) == 2048 * 1024
    assert metrics.host_memory_bytes(str(tmp_path / "none")) is None


def row(decision, source="access-log", app="nb"):
    return Row("alice", app, "a-1", "c", "id", None, source, 0.0, 0.0, decision, "why")


def collected(position=None):
    return Collected({}, position, None, [], None, [], {}, {}, {}, 0.01, 0.02)


def test_reaper_textfile_counts_across_runs(tmp_path):
    log = tmp_path / "access.json"
    log.write_bytes(b"x" * 100)
    cfg = parse_config(
        {
            "apps": {"nb": {"image": "x:1"}},
            "traefik": {"access_log": str(log)},
            "metrics": {"textfile": str(tmp_path / "m" / "reaper.prom")},
        }
    )
    path = cfg.metrics.textfile
    publish(
        cfg,
        [row(Verdict.KEEP), row(Verdict.REAP, "spawn")],
        collected(),
        Instant(100, 1, "b"),
        None,
        0.5,
    )
    publish(
        cfg,
        [row(Verdict.KEEP), row(Verdict.SKIP, "-", "gone")],
        collected(),
        Instant(160, 61, "b"),
        100,
        0.5,
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    assert samples[("servicehub_reaper_runs_total", ())] == 2
    keep = (("action", "keep"), ("app", "nb"), ("signal", "access-log"))
    assert samples[("servicehub_reaper_decisions_total", keep)] == 2
    skip = (("action", "skip"), ("app", "other"), ("signal", "none"))
    assert samples[("servicehub_reaper_decisions_total", skip)] == 1
    assert samples[("servicehub_reaper_access_log_behind_seconds", ())] == 60
    assert samples[("servicehub_reaper_access_log_behind_bytes", ())] == 100
    assert samples[("servicehub_reaper_last_run_timestamp_seconds", ())] == 160
    assert not any(n.endswith("_created") for n, _ in samples)


def test_a_damaged_textfile_starts_the_counters_again(tmp_path):
    path = tmp_path / "reaper.prom"
    path.write_text("servicehub_reaper_runs_total{ 12\n")
    assert previous_totals(path) == {}
    assert previous_totals(tmp_path / "missing.prom") == {}


def test_the_dashboard_and_the_rules_use_only_metrics_that_exist():
    import re

    defined = {
        "servicehub_" + m
        for path in ("servicehub/metrics.py", "servicehub/reaper_metrics.py")
        for m in re.findall(r'"servicehub_(\w+)"', (ROOT / path).read_text())
    }
    rules = ROOT / "roles/monitoring/templates/etc/prometheus/servicehub.rules.yml.j2"
    for path in (ROOT / "docs/grafana-dashboard.json", rules):
        for name in set(re.findall(r"servicehub_\w+", path.read_text())):
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert name in defined or base in defined, (path.name, name)
