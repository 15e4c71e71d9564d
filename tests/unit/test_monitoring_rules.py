"""The monitoring role's Prometheus files, rendered from its defaults as Ansible would, checked
by promtool: the rules and the config parse, and the rules fire on the series they watch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
TEMPLATES = ROLES / "monitoring" / "templates" / "etc" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install prometheus"
)


def render(template: str, **overrides: Any) -> str:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    loader = DataLoader()
    variables: dict[str, Any] = {}
    for role, kind in [
        ("servicehub", "defaults"),
        ("servicehub", "vars"),
        ("traefik", "defaults"),
        ("monitoring", "defaults"),
        ("monitoring", "vars"),
    ]:
        path = ROLES / role / kind / "main.yml"
        variables |= loader.load_from_file(str(path), trusted_as_template=True) or {}
    variables |= {"ansible_managed": "test", "ansible_facts": {"mounts": []}, **overrides}
    templar = Templar(loader=loader, variables=variables)
    return str(templar.template(trust_as_template((TEMPLATES / template).read_text())))


FAILURES = 'servicehub_spawn_failures_total{app="nb",reason="image_missing"}'
REAPER_SUMMARY = "No reaper run for 300 s: idle sessions are not removed"


def test_the_config_scrapes_the_hub_on_loopback():
    config = yaml.safe_load(render("prometheus.yml.j2"))
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {
        "servicehub": ["127.0.0.1:9181"],
        "traefik": ["127.0.0.1:9182"],  # the metrics entrypoint, never the API's port
        "node": ["127.0.0.1:9100"],
        "prometheus": ["127.0.0.1:9090"],
    }


@needs_promtool
def test_promtool_checks_the_rules_and_the_config(tmp_path):
    rules = tmp_path / "servicehub.rules.yml"
    rules.write_text(render("servicehub.rules.yml.j2"))
    subprocess.run([PROMTOOL, "check", "rules", str(rules)], check=True)
    config = tmp_path / "prometheus.yml"
    config.write_text(render("prometheus.yml.j2"))
    subprocess.run([PROMTOOL, "check", "config", "--syntax-only", str(config)], check=True)


@needs_promtool
def test_the_rules_fire_on_what_they_watch(tmp_path):
    """promtool's rule unit tests: the series a stopped reaper, failing spawns and a full volume
    filesystem leave behind raise their alerts after `for:`."""
    (tmp_path / "rules.yml").write_text(
        render("servicehub.rules.yml.j2", monitoring_alert_for="1m")
    )
    stale = 300 + 60
    cases = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # The reaper ran at t=0 and never again.
                    {"series": "servicehub_reaper_last_run_timestamp_seconds", "values": "0x20"},
                    {
                        "series": FAILURES,
                        "values": "0 0 1 2 3 4 5",
                    },
                    {
                        "series": 'node_filesystem_avail_bytes{mountpoint="/"}',
                        "values": "5x10",
                    },
                    {"series": 'node_filesystem_size_bytes{mountpoint="/"}', "values": "100x10"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "2m",
                        "alertname": "ServicehubReaperNotRunning",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": f"{stale + 120}s",
                        "alertname": "ServicehubReaperNotRunning",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {"summary": REAPER_SUMMARY},
                            }
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "ServicehubSpawnFailures",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "app": "nb",
                                    "reason": "image_missing",
                                },
                                "exp_annotations": {"summary": "Spawns of nb fail (image_missing)"},
                            }
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "ServicehubVolumesDiskFilling",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "mountpoint": "/"},
                                "exp_annotations": {
                                    "summary": "The users' volumes filesystem has 5% free"
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(cases))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
