"""The monitoring role on the converged hub: Prometheus scrapes the daemon, Traefik's metrics
entrypoint and node-exporter (the reaper's textfile); after the logins and reaps of test_hub.py,
a failed spawn, and a stopped reaper timer, its HTTP API shows the series and the alert."""

import json
import shlex
import time
from pathlib import Path

import pytest
import yaml
from hub_variables import VARIABLES

SCENARIO = Path(__file__).resolve().parents[1]
MONITORING = {
    **yaml.safe_load((SCENARIO.parents[1] / "roles/monitoring/defaults/main.yml").read_text()),
    **yaml.safe_load((SCENARIO / "host_vars/servicehub-hub/monitoring.yml").read_text()),
}
PROMETHEUS = f"http://127.0.0.1:{MONITORING['monitoring_prometheus_port']}"
IMAGE = "servicehub-example/whoami:latest"


@pytest.fixture(autouse=True)
def journal_on_failure(host, request):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for unit in ("prometheus", "prometheus-node-exporter", "servicehub"):
            print(host.run(f"journalctl -u {unit} -n 40 --no-pager").stdout)


def query(host, promql: str) -> list[dict]:
    out = host.check_output(
        f"curl -sf {PROMETHEUS}/api/v1/query --data-urlencode {shlex.quote('query=' + promql)}"
    )
    data = json.loads(out)
    assert data["status"] == "success", data
    return data["data"]["result"]


def eventually(host, promql: str, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not (result := query(host, promql)):
        assert time.monotonic() < deadline, f"no result for {promql}"
        time.sleep(2)
    return result


def test_prometheus_and_node_exporter_listen_on_loopback_only(host):
    for unit in ("prometheus", "prometheus-node-exporter"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    for key in ("monitoring_prometheus_port", "monitoring_node_exporter_port"):
        assert host.socket(f"tcp://127.0.0.1:{MONITORING[key]}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{MONITORING[key]}").is_listening


def test_every_target_is_up(host):
    for job in ("servicehub", "traefik", "node", "prometheus"):
        eventually(host, f'up{{job="{job}"}} == 1')


def test_series_after_logins_and_reaps(host):
    """test_hub.py logged users in to both apps and watched the reaper remove one."""
    assert eventually(host, 'servicehub_spawn_ready_seconds_count{app="whoami"} > 0')
    assert eventually(host, 'servicehub_spawn_routed_seconds_count{app="short"} > 0')
    assert eventually(host, 'servicehub_sessions{app="whoami",state="ready"} >= 1')
    assert eventually(host, "servicehub_memory_reserved_bytes > 0")
    assert eventually(host, 'servicehub_reaper_decisions_total{action="reap"} >= 1')
    assert eventually(host, "servicehub_reaper_runs_total > 0")
    assert eventually(host, 'traefik_entrypoint_requests_total{entrypoint="web"} > 0')
    # Traefik's service labels would name users' sessions: they are off.
    assert query(host, "traefik_service_requests_total") == []


def test_a_failed_spawn_is_counted_by_reason(host):
    """The app's image is untagged for one first request (Apache's part played with curl and
    the proxy secret, as root may), then tagged again."""
    secret = host.check_output(
        f"sed -n 's/^SERVICEHUB_PROXY_SECRET=//p' {VARIABLES['__servicehub_env_path']}"
    )
    image_id = host.check_output(f"docker image inspect -f '{{{{.Id}}}}' {IMAGE}")
    headers = [
        f"{VARIABLES['servicehub_user_header']}: metrics-probe@hub.test",
        f"{VARIABLES['servicehub_proxy_secret_header']}: {secret}",
        "Accept: text/html",
    ]
    curl = "curl -s -o /dev/null " + " ".join(f"-H {shlex.quote(h)}" for h in headers)
    try:
        host.run_test(f"docker rmi -f {IMAGE}")
        host.run_test(f"{curl} http://127.0.0.1:{VARIABLES['traefik_web_port']}/")
        deadline = time.monotonic() + 30
        metrics = f"http://127.0.0.1:{VARIABLES['servicehub_metrics_port']}/metrics"
        while "image_missing" not in host.check_output(f"curl -s {metrics}"):
            assert time.monotonic() < deadline, "the spawn did not fail"
            time.sleep(1)
    finally:
        host.run_test(f"docker tag {image_id} {IMAGE}")
    result = eventually(
        host, 'servicehub_spawn_failures_total{app="whoami",reason="image_missing"} >= 1'
    )
    assert "metrics-probe" not in json.dumps(result)


def test_a_stopped_reaper_timer_fires_its_alert(host):
    stale = MONITORING["monitoring_reaper_stale_seconds"]
    alert = 'ALERTS{alertname="ServicehubReaperNotRunning",alertstate="firing"}'
    assert query(host, alert) == []
    host.run_test("systemctl stop servicehub-reaper.timer")
    try:
        eventually(host, alert, timeout=stale + 60)
    finally:
        host.run_test("systemctl start servicehub-reaper.timer")
