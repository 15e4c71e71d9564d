"""Metrics against the real daemon, Traefik and Docker: /metrics after a spawn, a failed spawn
and a refused request; Traefik's metrics entrypoint; the reaper's textfile after a reap."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Hub, raw_request
from tests.integration.test_reaper import reap

pytestmark = pytest.mark.integration


def scrape(
    port: int, path: str = "/metrics"
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = raw_request(port, path)
    assert resp.status == 200, resp.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_after_a_spawn_a_failed_spawn_and_a_refusal(hub: Hub):
    assert hub.open("alice", "/whoami").status == 200
    assert hub.open("hank", "/missing/", app="missing").status == 503
    assert hub.get(None, "/whoami").status == 400  # no user header: refused
    samples = scrape(hub.metrics_port)

    assert value(samples, "servicehub_sessions", app="whoami", state="ready") == 1
    assert value(samples, "servicehub_sessions", app="missing", state="failed") == 1
    assert value(samples, "servicehub_sessions", app="slow", state="ready") == 0
    assert value(samples, "servicehub_spawns_total", app="whoami") == 1
    assert value(samples, "servicehub_spawn_ready_seconds_count", app="whoami") == 1
    assert value(samples, "servicehub_spawn_routed_seconds_count", app="whoami") == 1
    assert 0 < value(samples, "servicehub_spawn_ready_seconds_sum", app="whoami") < 60
    failures = "servicehub_spawn_failures_total"
    assert value(samples, failures, app="missing", reason="image_missing") == 1
    assert value(samples, "servicehub_requests_refused_total", reason="identity") == 1
    assert value(samples, "servicehub_memory_reserved_bytes", node=_node(samples)) == 256 * 2**20
    # No user id, no secret anywhere in the output.
    text = raw_request(hub.metrics_port, "/metrics").text
    assert "alice" not in text and hub.secret not in text


def _node(samples) -> str:
    (node,) = {
        dict(labels)["node"]
        for (name, labels) in samples
        if name == "servicehub_memory_reserved_bytes"
    }
    return node


def test_metrics_are_served_on_their_own_port_only(hub: Hub):
    through_traefik = hub.get("alice", "/metrics", html=False)
    assert "servicehub_spawns" not in through_traefik.text
    assert "servicehub_spawns" not in raw_request(hub.daemon_port, "/metrics").text


def test_traefik_metrics_entrypoint_has_no_api_and_no_user_labels(hub: Hub):
    assert hub.open("alice", "/whoami").status == 200
    resp = raw_request(hub.traefik_metrics_port, "/metrics")
    assert resp.status == 200 and "traefik_entrypoint_requests_total" in resp.text
    assert "alice" not in resp.text and "service=" not in resp.text
    assert raw_request(hub.traefik_metrics_port, "/api/rawdata").status == 404
    assert raw_request(hub.api_port, "/metrics").status == 404  # not on the API port any more


def test_reaper_textfile_after_a_reap(hub: Hub):
    assert hub.open("alice", "/whoami").status == 200
    now = time.time()
    reap(hub, now)
    rows = reap(hub, now + 7200)  # two hours later: idle, reaped
    assert rows[("alice", "whoami")].decision == "reap"
    text = hub.metrics_textfile.read_text()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert value(samples, "servicehub_reaper_runs_total") == 2
    decisions = "servicehub_reaper_decisions_total"
    by_action: dict[str, float] = {}
    for (name, labels), count in samples.items():
        if name == decisions:
            action = dict(labels)["action"]
            by_action[action] = by_action.get(action, 0) + count
    assert by_action == {"keep": 1, "reap": 1}
    assert value(samples, "servicehub_reaper_last_run_timestamp_seconds") == pytest.approx(
        now + 7200
    )
    assert value(samples, "servicehub_reaper_access_log_behind_seconds") == pytest.approx(7200)
    assert value(samples, "servicehub_reaper_access_log_behind_bytes") is not None
    assert hub.metrics_textfile.stat().st_mode & 0o777 == 0o644
