"""Attacks from inside a user's container, and requests that try to pick what runs.

Each test spawns the example app for a user through the real hub (Traefik + daemon + Docker),
then plays a hostile user: it runs code in that container with ``docker exec`` (what any user of
an app with a shell or a code runner can do) and tries to exhaust the host, gain privileges,
change the image, or reach the Docker API, the hub's loopback services or other users'
containers. Every attack must fail. Where a probe could fail for an unrelated reason, a positive
control shows that the same probe succeeds against a target that is allowed (the container's own
app, a listener on the bridge gateway), so each test breaks if its defence is removed.

The defences are those of the whoami app in ``tests.harness.example_apps()``: a pids and memory
cap, no capabilities, no-new-privileges, a read-only root with a noexec /tmp, uid 1000, one
bridge network per app with inter-container traffic off, and loopback-only host services.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.harness import Hub, Response, example_apps, raw_request

pytestmark = pytest.mark.integration

WHOAMI = example_apps()["whoami"]
APP_PORT = WHOAMI["port"]
PIDS_LIMIT = WHOAMI["limits"]["pids"]
MEMORY_LIMIT = 256 * 1024**2
assert WHOAMI["limits"]["memory"] == "256m"
# Present on every test machine (the example image is built from it) but in no app's config.
UNCONFIGURED_IMAGE = "servicehub-test/debian:12"

# Connects to each host:port argument (all at once); prints {target: errno}, 0 meaning connected.
CONNECT = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def attempt(target):
    host, port = target.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)  # a dropped SYN (ICC off) ends here, as EAGAIN
        return s.connect_ex((host, int(port)))
with ThreadPoolExecutor(len(sys.argv) - 1) as pool:
    print(json.dumps(dict(zip(sys.argv[1:], pool.map(attempt, sys.argv[1:])))))
"""

# The kernel's count of tasks in this container's pids cgroup (cgroup v1 or v2).
PIDS_CURRENT = """
def pids_current():
    for path in ("/sys/fs/cgroup/pids/pids.current", "/sys/fs/cgroup/pids.current"):
        try:
            with open(path) as f:
                return int(f.read())
        except FileNotFoundError:
            pass
    raise RuntimeError("no pids cgroup")
"""

FORK_BOMB = (
    PIDS_CURRENT
    + """
import errno, json, os, sys
r, w = os.pipe()
children, failure = [], None
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = errno.errorcode[exc.errno]
        break
    if pid == 0:  # a child blocks until the parent closes the pipe, then leaves
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    children.append(pid)
peak = pids_current()
os.close(w)
for pid in children:
    os.waitpid(pid, 0)
print(json.dumps({"forked": len(children), "failure": failure, "peak": peak}))
"""
)

PRIVILEGES = """
import errno, json, os, subprocess
KEYS = ("Uid", "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
def status(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f.read().splitlines())
    return {key: fields[key].split() for key in KEYS}
out = {"exec": status("self"), "app": status(1)}
try:
    os.setuid(0)
    out["setuid"] = "ok"
except OSError as exc:
    out["setuid"] = errno.errorcode[exc.errno]
st = os.stat("/usr/bin/su")
out["su_setuid_root"] = bool(st.st_mode & 0o4000) and st.st_uid == 0
# Executing a setuid-root binary makes it euid 0 unless no-new-privileges is set. su then asks
# for a password: the prompt proves the exec is done, so its credentials can be read.
su = subprocess.Popen(
    ["su", "root", "-c", "id"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
)
out["su_prompt"] = su.stderr.read(9).decode()
out["su"] = status(su.pid)
su.kill()
su.wait()
print(json.dumps(out))
"""

WRITES = """
import errno, json, os, shutil, subprocess, sys
out = {}
for directory in sys.argv[1:]:
    path = os.path.join(directory, "servicehub-attack")
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        out[directory] = "ok"
    except OSError as exc:
        out[directory] = errno.errorcode[exc.errno]
# A dropped binary in the writable /tmp must not run (noexec).
shutil.copy("/bin/true", "/tmp/dropped")
os.chmod("/tmp/dropped", 0o755)
try:
    out["exec /tmp"] = subprocess.run(["/tmp/dropped"]).returncode
except OSError as exc:
    out["exec /tmp"] = errno.errorcode[exc.errno]
print(json.dumps(out))
"""

DOCKER_API = """
import json, os
with open("/proc/self/mountinfo") as f:
    mounts = f.read()
print(json.dumps({
    "sockets": [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.lexists(p)],
    "mounted": "docker.sock" in mounts,
    "env": sorted(k for k in os.environ if k.startswith("DOCKER")),
}))
"""


def spawn(hub: Hub, user: str) -> dict[str, Any]:
    """Open the whoami app for ``user``; its container (as ``docker inspect`` shows it)."""
    resp = hub.open(user, "/whoami", app="whoami")
    assert resp.status == 200 and resp.json()["header_user"] == user, resp.text
    (container,) = hub.containers(app="whoami", user=user)
    return container


def run_python(
    container: dict[str, Any], code: str, *args: object, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python3 -c code args`` inside the container, as its user (1000), like a hostile app."""
    return subprocess.run(
        ["docker", "exec", container["Id"], "python3", "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(container: dict[str, Any], code: str, *args: object) -> Any:
    done = run_python(container, code, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def connect(container: dict[str, Any], *targets: str) -> dict[str, int]:
    """Try a TCP connection from inside the container to each host:port; errno per target."""
    return dict(run_json(container, CONNECT, *targets))


def network(hub: Hub, container: dict[str, Any]) -> dict[str, Any]:
    return dict(container["NetworkSettings"]["Networks"][f"{hub.hub_name}-whoami"])


@contextlib.contextmanager
def listener(host: str) -> Iterator[int]:
    """A TCP listener on the host at ``host`` (any free port): a target that is reachable."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def still_serves(hub: Hub, container: dict[str, Any], user: str) -> None:
    """The attacked container is still running and still answers its user through the hub."""
    (now,) = hub.containers(app="whoami", user=user)
    assert now["Id"] == container["Id"] and now["State"]["Running"]
    resp = hub.get(user, "/whoami", html=False)
    assert resp.status == 200 and resp.json()["header_user"] == user


def request(
    hub: Hub,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> Response:
    """A request as mallory, as Apache would send it to Traefik, with a Host of our choosing."""
    headers = headers or []
    if not any(name.lower() == "host" for name, _ in headers):
        headers = [("Host", f"127.0.0.1:{hub.web_port}"), *headers]
    return raw_request(
        hub.web_port, path, [*hub.identity_headers("mallory"), *headers], method, body
    )


def test_fork_bomb_is_stopped_by_the_pids_limit(hub):
    """Fork bomb (4x the limit in processes) vs. the container's pids cgroup limit."""
    container = spawn(hub, "alice")
    assert container["HostConfig"]["PidsLimit"] == PIDS_LIMIT
    bomb = run_json(container, FORK_BOMB, 4 * PIDS_LIMIT)
    assert bomb["failure"] == "EAGAIN", bomb  # "Resource temporarily unavailable"
    assert bomb["forked"] < PIDS_LIMIT and bomb["peak"] <= PIDS_LIMIT, bomb
    # The children are gone again and the app (its own threads count too) still works.
    assert run_json(container, PIDS_CURRENT + "print(pids_current())") <= PIDS_LIMIT
    still_serves(hub, container, "alice")


def test_allocating_more_than_the_memory_cap_is_killed(hub):
    """Memory hog (cap + 144 MiB, every page written) vs. the memory cgroup limit, no swap."""
    container = spawn(hub, "alice")
    host = container["HostConfig"]
    assert host["Memory"] == MEMORY_LIMIT and host["MemorySwap"] == MEMORY_LIMIT
    hog = run_python(
        container,
        "import sys; b = b'x' * int(sys.argv[1]); print('allocated', len(b))",
        MEMORY_LIMIT + 144 * 1024**2,
    )
    assert "allocated" not in hog.stdout
    # 137: SIGKILL from the OOM killer (the usual end); MemoryError if a mapping is refused.
    assert hog.returncode == 137 or (hog.returncode == 1 and "MemoryError" in hog.stderr), hog
    still_serves(hub, container, "alice")  # the OOM killer took the hog, not the app


def test_no_capabilities_and_setuid_binaries_gain_nothing(hub):
    """Privilege escalation (setuid(0), the setuid-root su) vs. cap drop ALL + no-new-privs."""
    container = spawn(hub, "alice")
    probe = run_json(container, PRIVILEGES)
    no_caps = ["0000000000000000"]
    for process in ("exec", "app", "su"):
        status = probe[process]
        assert status["Uid"] == ["1000"] * 4, (process, status)
        assert status["NoNewPrivs"] == ["1"], (process, status)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert status[cap] == no_caps, (process, cap, status)
    assert probe["setuid"] == "EPERM"
    # su really is setuid root and was running (waiting for a password), yet not as euid 0.
    assert probe["su_setuid_root"] and probe["su_prompt"] == "Password:", probe


def test_the_root_filesystem_is_read_only(hub):
    """Tampering with the image (/, /etc, /usr, world-writable /var/tmp) vs. a read-only root."""
    container = spawn(hub, "alice")
    writes = run_json(container, WRITES, "/", "/etc", "/usr", "/app", "/var/tmp", "/tmp", "/data")
    # EROFS, not EACCES: the file system refuses, whatever the directory's permissions.
    for directory in ("/", "/etc", "/usr", "/app", "/var/tmp"):
        assert writes[directory] == "EROFS", (directory, writes)
    assert writes["/tmp"] == "ok" and writes["/data"] == "ok", writes  # tmpfs and the volume
    assert writes["exec /tmp"] == "EACCES", writes


def test_the_docker_api_is_out_of_reach(hub):
    """Container escape through the Docker API vs. no socket mounted and no TCP listener."""
    container = spawn(hub, "alice")
    found = run_json(container, DOCKER_API)
    assert found == {"sockets": [], "mounted": False, "env": []}
    gateway = network(hub, container)["Gateway"]
    with listener(gateway) as open_port:
        reach = connect(container, f"{gateway}:2375", f"{gateway}:2376", f"{gateway}:{open_port}")
    assert reach.pop(f"{gateway}:{open_port}") == 0  # control: the host is reachable there
    assert all(code != 0 for code in reach.values()), reach


def test_the_hub_loopback_services_are_out_of_reach(hub):
    """Bypassing Apache (Traefik web and API, the daemon) vs. listeners bound to 127.0.0.1."""
    container = spawn(hub, "alice")
    gateway = network(hub, container)["Gateway"]
    ports = (hub.web_port, hub.api_port, hub.daemon_port)
    targets = [f"{host}:{port}" for host in ("127.0.0.1", gateway) for port in ports]
    with listener(gateway) as open_port:
        own_app, on_gateway = f"127.0.0.1:{APP_PORT}", f"{gateway}:{open_port}"
        reach = connect(container, *targets, own_app, on_gateway)
    # Controls: the probe connects to the container's own app and to a host listener on the
    # gateway, so the hub's ports are refused only because they listen on the host's loopback.
    assert reach.pop(own_app) == 0 and reach.pop(on_gateway) == 0, reach
    assert all(code != 0 for code in reach.values()), reach


def test_other_users_containers_are_out_of_reach(hub):
    """Reaching another user's app by IP or by name vs. ICC off on the app's network."""
    containers = {user: spawn(hub, user) for user in ("alice", "bob")}
    for user, other in (("alice", "bob"), ("bob", "alice")):
        own, theirs = containers[user], containers[other]
        their_ip, their_name = network(hub, theirs)["IPAddress"], theirs["Name"].lstrip("/")
        # Docker's DNS gives the name away: the by-name attempt really targets the container.
        resolved = run_python(
            own, "import socket, sys; print(socket.gethostbyname(sys.argv[1]))", their_name
        )
        assert resolved.stdout.strip() == their_ip, resolved
        own_app = f"127.0.0.1:{APP_PORT}"
        reach = connect(own, f"{their_ip}:{APP_PORT}", f"{their_name}:{APP_PORT}", own_app)
        assert reach.pop(own_app) == 0  # control: the same probe reaches an app on that port
        assert all(code != 0 for code in reach.values()), (user, reach)


def test_requests_cannot_choose_an_unconfigured_app_or_image(hub):
    """Forged hosts, paths, query strings, forms and headers naming an app or image vs. the
    daemon only ever creating containers from the config."""
    present = subprocess.run(
        ["docker", "image", "inspect", UNCONFIGURED_IMAGE], capture_output=True
    )
    assert present.returncode == 0  # the attack could start it if the daemon took the hint
    image = quote(UNCONFIGURED_IMAGE, safe="")
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    refused = [
        request(hub, f"/_servicehub/api/status?app=evil&image={image}"),
        request(hub, "/_servicehub/api/status?app=../whoami"),
        request(hub, "/_servicehub/api/status?app=WHOAMI"),
        request(hub, "/_servicehub/api/status?app=whoami%00"),
        request(hub, "/_servicehub/retry", form, "POST", f"app=evil&image={image}".encode()),
        request(hub, f"/_servicehub/spawn?app=evil&image={image}"),
        request(hub, f"/_servicehub/apps/evil?image={image}"),
    ]
    assert all(r.status == 404 for r in refused), [(r.status, r.text) for r in refused]
    # Requests that land on the app at "/": they may spawn whoami, and nothing else.
    for resp in [
        request(hub, "/", [("Host", "evil.example")]),
        request(hub, "/", [("Host", UNCONFIGURED_IMAGE.replace("/", "."))]),
        request(hub, f"/?app=evil&image={image}"),
        request(hub, "/evil/", [("X-Servicehub-App", "evil"), ("X-Servicehub-Image", image)]),
        request(hub, "/_servicehub/../evil/"),
        request(hub, "/%2F_servicehub%2Fapi%2Fstatus?app=evil"),
        request(hub, f"/_servicehub/api/status?app=whoami&image={image}"),
        request(hub, "/_servicehub/retry", form, "POST", f"app=whoami&image={image}".encode()),
        request(
            hub,
            "/containers/create?name=evil",
            [("Content-Type", "application/json")],
            "POST",
            json.dumps({"Image": UNCONFIGURED_IMAGE, "HostConfig": {"Privileged": True}}).encode(),
        ),
    ]:
        assert resp.status < 500 or resp.is_wait, resp.text  # refused, or whoami starting
    hub.open("mallory", "/", app="whoami")  # let the spawns those requests started settle
    configured = {name: app["image"] for name, app in hub.apps.items()}
    containers = hub.containers()
    assert containers
    for container in containers:
        labels = container["Config"]["Labels"]
        assert labels["servicehub.user"] == "mallory"
        assert container["Config"]["Image"] == configured[labels["servicehub.app"]], labels
        assert not container["HostConfig"]["Privileged"]
    label = f"label=servicehub.hub={hub.hub_name}"
    networks = subprocess.run(
        ["docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(networks) == {f"{hub.hub_name}-{name}" for name in configured}
