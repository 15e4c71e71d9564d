from pathlib import Path

import pytest

from servicehub.config import ConfigError, load_config, parse_config

MINIMAL = {"apps": {"whoami": {"image": "servicehub-example/whoami:latest"}}}


def app(**overrides):
    return {"apps": {"whoami": {"image": "servicehub-example/whoami:latest", **overrides}}}


def test_minimal_config_gets_safe_defaults():
    config = parse_config(MINIMAL)
    app_config = config.apps["whoami"]
    assert config.listen_host == "127.0.0.1"
    assert app_config.uid == 1000 and app_config.read_only
    assert app_config.path_prefix == "/"
    assert app_config.limits.pids == 256
    assert app_config.idle_timeout == 3600
    assert app_config.grace == 300 and app_config.cpu_counts and app_config.cpu_threshold == 0.1
    assert app_config.activity_bytes == 8 * 1024 and app_config.activity_endpoint is None
    assert app_config.background_windows == 5
    assert str(config.traefik.access_log) == "/var/log/traefik/access.json"
    assert str(config.state_dir) == "/var/lib/servicehub"


def test_reaper_keys_parse():
    config = parse_config(
        {
            **app(
                grace=0,
                cpu_counts=False,
                cpu_threshold=0.5,
                activity_bytes="64k",
                activity_endpoint="/api/activity",
            ),
            "state_dir": "/srv/hub",
            "traefik": {"access_log": "/srv/log/access.json"},
        }
    )
    a = config.apps["whoami"]
    assert (a.grace, a.cpu_counts, a.cpu_threshold) == (0, False, 0.5)
    assert (a.activity_bytes, a.activity_endpoint) == (64 * 1024, "/api/activity")
    assert str(config.state_dir) == "/srv/hub"
    assert str(config.traefik.access_log) == "/srv/log/access.json"


def test_durations_and_sizes_parse():
    config = parse_config(
        app(
            idle_timeout="15m",
            max_lifetime="2h",
            start_timeout=30,
            limits={"memory": "512m", "cpus": 0.5, "pids": 64},
        )
    )
    a = config.apps["whoami"]
    assert (a.idle_timeout, a.max_lifetime, a.start_timeout) == (900, 7200, 30)
    assert a.limits.memory_bytes == 512 * 1024**2 and a.limits.cpus == 0.5


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({}, "apps"),
        ({"apps": {}}, "apps"),
        ({"apps": {"Bad_Name": {"image": "x"}}}, "apps.Bad_Name"),
        (app(image=None), "apps.whoami.image"),
        (app(port=0), "apps.whoami.port"),
        (app(port="80"), "apps.whoami.port"),
        (app(user="root"), "apps.whoami.user"),
        (app(user="0:0"), "apps.whoami.user"),
        (app(limits={"memory": "lots"}), "apps.whoami.limits.memory"),
        (app(limits={"cpus": -1}), "apps.whoami.limits.cpus"),
        (app(limits={"pids": 1}), "apps.whoami.limits.pids"),
        (app(limits={"swap": "1g"}), "apps.whoami.limits.swap"),
        (app(idle_timeout="soon"), "apps.whoami.idle_timeout"),
        (app(idle_timeout=0), "apps.whoami.idle_timeout"),
        (app(grace="-1s"), "apps.whoami.grace"),
        (app(cpu_counts="yes"), "apps.whoami.cpu_counts"),
        (app(cpu_threshold=0), "apps.whoami.cpu_threshold"),
        (app(activity_bytes="lots"), "apps.whoami.activity_bytes"),
        (app(background_windows=-1), "apps.whoami.background_windows"),
        (app(background_windows="5"), "apps.whoami.background_windows"),
        (app(background_windows=61), "apps.whoami.background_windows"),
        (app(activity_endpoint="activity"), "apps.whoami.activity_endpoint"),
        ({**MINIMAL, "state_dir": "relative/dir"}, "state_dir"),
        ({**MINIMAL, "traefik": {"access_log": "access.json"}}, "traefik.access_log"),
        (app(route={"path_prefix": "/no-trailing-slash"}), "apps.whoami.route.path_prefix"),
        (app(route={"path_prefix": "/_servicehub/"}), "apps.whoami.route.path_prefix"),
        (app(route={"host": "Bad Host"}), "apps.whoami.route.host"),
        (app(volume={"name": "shared"}), "apps.whoami.volume.name"),
        (app(volume={"name": "{user}-{slug}"}), "apps.whoami.volume.name"),
        (app(volume={"name": "../{slug}"}), "apps.whoami.volume.name"),
        (app(volume={"mount": "/"}), "apps.whoami.volume.mount"),
        (app(command="python app.py"), "apps.whoami.command"),
        (app(environment={"SERVICEHUB_USER": "x"}), "apps.whoami.environment.SERVICEHUB_USER"),
        (app(readiness={"type": "grpc"}), "apps.whoami.readiness.type"),
        (app(imgae="typo"), "apps.whoami.imgae"),
        ({**MINIMAL, "listen": {"host": "0.0.0.0"}}, "listen.host"),
        ({**MINIMAL, "listen": {"host": "example.org"}}, "listen.host"),
        ({**MINIMAL, "traefik": {"api_url": "http://10.0.0.1:8080"}}, "traefik.api_url"),
        ({**MINIMAL, "colour": "blue"}, "colour"),
        (app(idle_timeout="2m", grace="5m"), "apps.whoami.grace"),
        (app(limits={"cpus": 0.05}, cpu_threshold=0.1), "apps.whoami.cpu_threshold"),
        (app(limits={"cpus": 0.1}), "apps.whoami.cpu_threshold"),  # the default threshold
        ({**MINIMAL, "reaper": {"daemon_unit": "servicehub"}}, "reaper.daemon_unit"),
        ({**MINIMAL, "reaper": {"daemon_unit": "a b.service"}}, "reaper.daemon_unit"),
        ({**MINIMAL, "reaper": {"daemon_user": "Bad User"}}, "reaper.daemon_user"),
        ({**MINIMAL, "reaper": {"daemon_uid": 5}}, "reaper.daemon_uid"),
    ],
)
def test_bad_values_are_refused_naming_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == key
    assert str(err.value).startswith(key)


def test_two_apps_on_the_same_route_are_refused():
    data = {"apps": {"a": {"image": "x"}, "b": {"image": "y"}}}
    with pytest.raises(ConfigError, match="same route"):
        parse_config(data)


def test_proxy_secret_comes_from_environment_and_is_checked():
    assert parse_config(MINIMAL, {"SERVICEHUB_PROXY_SECRET": "s" * 32}).proxy_secret == "s" * 32
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL, {"SERVICEHUB_PROXY_SECRET": "short"})
    assert err.value.key == "SERVICEHUB_PROXY_SECRET"


def test_load_config_reports_yaml_errors_with_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("apps: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml")


def test_allow_lists():
    a = parse_config(app(allow={"users": ["alice"], "groups": ["lab"]})).apps["whoami"]
    assert a.allows("alice", frozenset())
    assert a.allows("bob", frozenset({"lab"}))
    assert not a.allows("bob", frozenset({"other"}))
    assert parse_config(MINIMAL).apps["whoami"].allows("anyone", frozenset())


def test_volume_name_uses_only_safe_fields():
    a = parse_config(app(volume={"name": "home-{app}-{slug}", "mount": "/home/app"})).apps["whoami"]
    assert a.volume_name("alice-abc") == "home-whoami-alice-abc"


def test_the_documented_example_config_is_valid():
    config = load_config(Path(__file__).parents[2] / "examples" / "servicehub.yml")
    assert set(config.apps) == {"whoami"}


def test_grace_never_stretches_idle_timeout():
    # The default grace (5m) follows a shorter idle_timeout instead of stretching it.
    assert parse_config(app(idle_timeout="2m")).apps["whoami"].grace == 120
    assert parse_config(app(idle_timeout="2m", grace="2m")).apps["whoami"].grace == 120
    assert parse_config(app(idle_timeout="1h")).apps["whoami"].grace == 300
    with pytest.raises(ConfigError) as err:
        parse_config(app(idle_timeout="2m", grace="5m"))
    assert str(err.value).startswith("apps.whoami.grace: 300s is longer than idle_timeout (120s)")


def test_cpu_threshold_must_be_reachable_under_the_cpu_limit():
    # Both are cores: a container capped at 0.25 cores never averages more than 0.25.
    with pytest.raises(ConfigError) as err:
        parse_config(app(limits={"cpus": 0.25}, cpu_threshold=0.5))
    assert "not below limits.cpus (0.25)" in str(err.value)
    assert parse_config(app(limits={"cpus": 0.25}, cpu_threshold=0.2)).apps["whoami"]
    # Where CPU does not count, the threshold is never used: any cap is fine.
    assert parse_config(app(limits={"cpus": 0.05}, cpu_counts=False)).apps["whoami"]


def test_reaper_trusts_the_daemons_unit_and_account():
    default = parse_config(MINIMAL).reaper
    assert (default.daemon_unit, default.daemon_user) == ("servicehub.service", None)
    named = parse_config(
        {**MINIMAL, "reaper": {"daemon_unit": "hub@1.service", "daemon_user": "hub"}}
    ).reaper
    assert (named.daemon_unit, named.daemon_user) == ("hub@1.service", "hub")
    assert parse_config({**MINIMAL, "reaper": {"daemon_user": "998"}}).reaper.daemon_user == "998"
