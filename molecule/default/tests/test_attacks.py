"""The attack suite: every test tries to break one of the hub's invariants and must fail to.

It runs first in the verify step of molecule/default (pytest takes the files in name order),
against the whole hub converged by site.yml: Apache with mod_auth_openidc in front of the real
OpenID Connect provider, Traefik, the daemon, Docker and the nftables firewall. Each test names the
attack; its assertions are what the defence guarantees. docs/attacks.md lists them with the
defence each one meets.

Most attacks go through Apache as a logged-in user (alice) with a forged identity of somebody
who does not exist (FORGED): had any forgery worked, Traefik's access log, which records the
identity header every request reached it with, would show FORGED.

The scenario gives the identity headers names other than the defaults (host_vars/), and the
suite takes every header name from the scenario's variables, never from a literal: a role that
ignored the variables would let the forgeries through.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
from hub_variables import VARIABLES

ROOT = Path(__file__).resolve().parents[3]


def go_header_name(name: str) -> str:
    """A header name as Go (Traefik) writes it: X-Hub-User for x-hub-user."""
    return "-".join(word.capitalize() for word in name.split("-"))


USER_HEADER = VARIABLES["servicehub_user_header"]
GROUPS_HEADER = VARIABLES["servicehub_groups_header"]
SECRET_HEADER = VARIABLES["servicehub_proxy_secret_header"]
IDENTITY_HEADERS = (USER_HEADER, GROUPS_HEADER, SECRET_HEADER)
HUB = "hub.test"
ALICE = "alice@example.org"
FORGED = "mallet@evil.test"
ACCESS_LOG = f"{VARIABLES['traefik_log_dir']}/access.json"
USER_FIELD = f"request_{go_header_name(USER_HEADER)}"
APP_IMAGES = {"servicehub-example/whoami:latest"}
WEB_PORT = VARIABLES["traefik_web_port"]
API_PORT = VARIABLES["traefik_api_port"]
DAEMON_PORT = VARIABLES["servicehub_listen_port"]
BACKEND_PORTS = {"traefik web": WEB_PORT, "traefik api": API_PORT, "daemon": DAEMON_PORT}
VOLUMES_ROOT = VARIABLES["servicehub_volumes_root"]
ROUTES_DIR = VARIABLES["traefik_dynamic_dir"]
DIRS_SOCKET = VARIABLES["__servicehub_dirs_socket"]
DIRS_UNIT = VARIABLES["__servicehub_dirs_unit"]
DAEMON_ACCOUNT = VARIABLES["__servicehub_user"]


# ---- helpers -----------------------------------------------------------------------------------


def shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def browse(host, login: str, *extra: str) -> dict:
    """A scripted browser session (hubclient): login form, wait page, the app's answer."""
    args = ["hubclient", "--user", login, "--password", f"{login}-password", *extra]
    cmd = host.run(" ".join(shell_quote(a) for a in args))
    assert cmd.rc == 0, cmd.stderr + cmd.stdout
    return json.loads(cmd.stdout)


def raw(host, request: str, cookies: str | None = None) -> dict:
    """One raw request to Apache on :443, exactly as written ("{cookie}": the saved session)."""
    encoded = base64.b64encode(request.encode("utf-8")).decode()
    cmd = f"hubraw --request-b64 {encoded}" + (f" --cookie-file {cookies}" if cookies else "")
    out = host.run(cmd)
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


def request(
    method: str,
    path: str,
    *headers: str,
    cookie: bool = True,
    body: str = "",
    accept: str = "application/json",
) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HUB}", f"Accept: {accept}"]
    if cookie:
        lines.append("Cookie: {cookie}")
    lines += headers
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body.encode())}")
    lines.append("Connection: close")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def header(response: dict, name: str) -> str | None:
    values = [v for k, v in response["headers"] if k.lower() == name.lower()]
    return values[0] if values else None


def cgi_name(name: str) -> str:
    """How CGI/WSGI-style apps see a header name: X_HUB_USER for X-Hub-User, X.Hub_user..."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


class Seen(NamedTuple):
    """The identity an app received, read from whoami's list of every header it got (whoami's
    own header_user and groups fields know only the default names)."""

    users: list[str]  # every value of the user header
    groups: list[str]  # the groups header, parsed
    raw_groups: str | None
    aliases: list[str]  # other spellings of an identity header's name (CGI apps read them)
    secrets: list[str]  # the proxy secret header: Traefik removes it before the app


def utf8(value: str) -> str:
    """A header value as the hub sent it: whoami's header list holds what http.server decoded
    as Latin-1, and the hub sends UTF-8 (as whoami's own ``header_user`` reads it)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def seen_by_app(info: dict) -> Seen:
    headers = info["headers"]

    def values(name: str) -> list[str]:
        return [utf8(v) for k, v in headers if k.lower() == name.lower()]

    groups = values(GROUPS_HEADER)
    raw_groups = groups[0] if groups else None
    names = {n.lower() for n in IDENTITY_HEADERS}
    cgi = {cgi_name(n) for n in IDENTITY_HEADERS}
    return Seen(
        users=values(USER_HEADER),
        groups=[g.strip() for g in raw_groups.split(",") if g.strip()] if raw_groups else [],
        raw_groups=raw_groups,
        aliases=sorted(k for k, _ in headers if cgi_name(k) in cgi and k.lower() not in names),
        secrets=values(SECRET_HEADER),
    )


def marker() -> str:
    return uuid.uuid4().hex[:12]


def traefik_log(host) -> list[dict]:
    out = host.run_test(f"cat {ACCESS_LOG}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def users_seen_by_traefik(host, mark: str, barrier_cookies: str, at_least: int = 0) -> list[str]:
    """The identities Traefik saw on requests whose path holds `mark`.

    A log barrier first: one more request as alice, with its own mark, waited for in the log.
    Traefik writes entries in order, so once it is there, every earlier request is too. A
    WebSocket is logged when its tunnel closes, which can come later: `at_least` waits for it.
    """
    barrier = marker()
    assert raw(host, request("GET", f"/whoami?barrier={barrier}"), barrier_cookies)["status"] == 200
    deadline = time.monotonic() + 30
    while True:
        entries = traefik_log(host)
        ours = [e.get(USER_FIELD, "") for e in entries if mark in e.get("RequestPath", "")]
        if any(barrier in e.get("RequestPath", "") for e in entries) and len(ours) >= at_least:
            return ours
        assert time.monotonic() < deadline, "the requests never reached Traefik's log"
        time.sleep(0.3)


def container_users(host) -> list[str]:
    out = host.run_test("docker ps -a --format '{{.Label \"servicehub.user\"}}'").stdout
    return [line for line in out.splitlines() if line]


def container_of(host, user: str, app: str = "whoami") -> dict:
    filters = (
        f"--filter label=servicehub.app={app} --filter label=servicehub.user={shell_quote(user)}"
    )
    ids = host.run_test(f"docker ps -q {filters}").stdout.split()
    assert len(ids) == 1, (user, ids)
    return json.loads(host.run_test(f"docker inspect {ids[0]}").stdout)[0]


def is_sent_to_login(response: dict) -> bool:
    """mod_auth_openidc's answer to a request without a session: the provider's login page for a
    browser, 401 for anything that does not ask for HTML."""
    location = header(response, "Location") or ""
    if response["status"] == 302:
        return location.startswith("http://idp.test:9400/auth?")
    return response["status"] == 401


@pytest.fixture(scope="module")
def alice(host) -> str:
    """alice logged in, her container running; her session cookie saved for raw requests."""
    result = browse(host, "alice", "--save-cookies", "/tmp/alice.cookies")
    assert result["status"] == 200, result["trail"]
    return "/tmp/alice.cookies"


@pytest.fixture(scope="module")
def bob(host) -> dict:
    result = browse(host, "bob")
    assert result["status"] == 200, result["trail"]
    return json.loads(result["body"])


# ---- forged identity ---------------------------------------------------------------------------


def spellings(name: str) -> list[str]:
    """Every way a client might spell a header's name so that some parser reads it as `name`:
    other case, '_' or '.' for '-', separators mixed, and separators no parser should accept."""
    words = name.split("-")
    first, rest = words[0], words[1:]

    def joined(first_sep: str, rest_sep: str) -> str:
        return first + first_sep + rest_sep.join(rest)

    found = [name, go_header_name(name), name.lower(), name.upper()]
    found += ["_".join(words), "_".join(words).lower()]
    if len(rest) > 1:  # mixed separators need three words or more
        found += [joined("-", "_"), joined("_", "-"), joined("-", ".")]
    found += [sep.join(words) for sep in ".~+!"]
    return list(dict.fromkeys(found))


def underscored(name: str) -> str:
    return name.replace("-", "_")


FORGERIES = {
    **{f"spelling {name}": [f"{name}: {FORGED}"] for name in spellings(USER_HEADER)},
    "repeated twice": [f"{USER_HEADER}: {FORGED}", f"{USER_HEADER}: {FORGED}"],
    "two values in one header": [f"{USER_HEADER}: {FORGED}, {ALICE}"],
    "groups": [f"{GROUPS_HEADER}: admin", f"{underscored(GROUPS_HEADER)}: admin"],
    "proxy secret guessed": [f"{SECRET_HEADER}: guess", f"{USER_HEADER}: {FORGED}"],
    "forwarded headers": [
        f"{name}: {FORGED}"
        for name in (
            "X-Forwarded-User",
            "X-Remote-User",
            "Remote-User",
            "X-Forwarded-For",
            "X-Forwarded-Host",
            "X-Forwarded-Server",
            "X-Forwarded-Proto",
            "X-Forwarded-Port",
            "X-Forwarded-Prefix",
            "X-Forwarded-Uri",
            "X-Real-Ip",
            "X-Original-Url",
            "X-Rewrite-Url",
            "Forwarded",
        )
    ],
}


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_forged_identity_headers_with_a_session_reach_only_the_sessions_user(host, alice, forgery):
    mark = marker()
    answer = raw(host, request("GET", f"/whoami?attack={mark}", *FORGERIES[forgery]), alice)
    assert answer["status"] == 200, answer
    seen = seen_by_app(json.loads(answer["body"]))
    assert seen.users == [ALICE]
    assert seen.groups == ["lab"]
    assert seen.aliases == []
    assert seen.secrets == []
    assert FORGED not in answer["body"]
    assert users_seen_by_traefik(host, mark, alice) == [ALICE]


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_forged_identity_headers_without_a_session_are_sent_to_login(host, alice, forgery):
    mark = marker()
    answer = raw(host, request("GET", f"/whoami?attack={mark}", *FORGERIES[forgery], cookie=False))
    assert is_sent_to_login(answer), answer
    assert users_seen_by_traefik(host, mark, alice) == []


def test_a_folded_identity_header_is_refused_or_dropped(host, alice):
    """obs-fold (a continuation line) is how some parsers were tricked into two values."""
    mark = marker()
    folded = f"{USER_HEADER}: mallet\r\n @evil.test"
    answer = raw(host, request("GET", f"/whoami?attack={mark}", folded), alice)
    if answer["status"] == 200:
        assert seen_by_app(json.loads(answer["body"])).users == [ALICE]
    else:
        assert answer["status"] == 400, answer
    assert set(users_seen_by_traefik(host, mark, alice)) <= {ALICE}


@pytest.mark.parametrize(
    "method", ["OPTIONS", "POST", "PUT", "DELETE", "PATCH", "HEAD", "PROPFIND"]
)
def test_forged_identity_through_other_methods(host, alice, method):
    mark = marker()
    forged = [f"{USER_HEADER}: {FORGED}", f"{underscored(USER_HEADER)}: {FORGED}"]
    with_session = raw(host, request(method, f"/whoami?attack={mark}", *forged), alice)
    without = raw(host, request(method, f"/whoami?attack={mark}", *forged, cookie=False))
    assert with_session["status"] not in (0, 302), with_session
    assert without["status"] in (302, 401), without
    assert users_seen_by_traefik(host, mark, alice) == [ALICE]


def test_trace_does_not_echo_the_session_cookie(host, alice):
    answer = raw(host, request("TRACE", "/whoami"), alice)
    assert answer["status"] in (403, 405), answer
    assert "mod_auth_openidc_session" not in answer["body"]


@pytest.mark.parametrize("session", [True, False], ids=["with session", "without session"])
def test_forged_identity_through_a_websocket_upgrade(host, alice, session):
    mark = marker()
    upgrade = request(
        "GET",
        f"/ws?attack={mark}",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        f"{USER_HEADER}: {FORGED}",
        f"{underscored(USER_HEADER)}: {FORGED}",
        cookie=session,
    ).replace("Connection: close", "Connection: Upgrade")
    answer = raw(host, upgrade, alice if session else None)
    if session:
        assert answer["status"] == 101, answer
        assert users_seen_by_traefik(host, mark, alice, at_least=1) == [ALICE]
    else:
        assert is_sent_to_login(answer), answer
        assert users_seen_by_traefik(host, mark, alice) == []


@pytest.mark.parametrize(
    "named",
    [
        USER_HEADER,
        SECRET_HEADER,
        GROUPS_HEADER,
        f"{USER_HEADER}, {SECRET_HEADER}",
        f"keep-alive, {underscored(USER_HEADER).lower()}",
        "X-Forwarded-For",  # would drop Apache's own, and Traefik would fill in 127.0.0.1
        "Cookie",
    ],
)
def test_connection_header_naming_the_identity_headers_is_refused(host, alice, named):
    """Hop-by-hop stripping would remove the trusted headers after Apache set them."""
    mark = marker()
    req = request("GET", f"/whoami?attack={mark}", f"{USER_HEADER}: {FORGED}")
    answer = raw(host, req.replace("Connection: close", f"Connection: close, {named}"), alice)
    assert answer["status"] == 403, answer
    assert users_seen_by_traefik(host, mark, alice) == []
    assert FORGED not in container_users(host)


# ---- bypassing Apache --------------------------------------------------------------------------


def hub_address(host) -> str:
    name = host.backend.get_hostname()  # the container, under Molecule and with --hosts=docker://
    out = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            name,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0]


def tcp_connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def test_backend_ports_are_closed_to_other_machines(host):
    address = hub_address(host)
    assert tcp_connects(address, 443), "control: Apache must answer from outside"
    for name, port in BACKEND_PORTS.items():
        assert not tcp_connects(address, port), f"{name} port {port} reachable from outside"


CONNECT_ONE = (
    "import socket,sys; s=socket.socket(); s.settimeout(3); "
    "print('open' if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 'closed')"
)


def network_of(container: dict) -> dict:
    """The container's only network's settings (IPAddress, Gateway, ...)."""
    (network,) = container["NetworkSettings"]["Networks"].values()
    return network


def test_user_containers_are_unreachable_from_another_machine_routing_through_the_hub(host, alice):
    """Another machine on the hub's network points a route for the container subnet at the hub."""
    target = network_of(container_of(host, ALICE))["IPAddress"]
    neighbour = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--cap-add",
            "NET_ADMIN",
            "--entrypoint",
            "sh",
            "servicehub-test/systemd:12",
            "-c",
            f"ip route add {target}/32 via {hub_address(host)} && "
            f"python3 -c {shell_quote(CONNECT_ONE)} {target} 8000",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert neighbour.returncode == 0, neighbour.stderr
    assert neighbour.stdout.strip() == "closed"
    # Control: from the hub itself the app answers on that address.
    assert connect_from_hub(host, target, 8000) == "open"


def connect_from_hub(host, address: str, port: int, user: str | None = None) -> str:
    """'open' or 'closed': a TCP connect from the hub itself, as `user` (root if None)."""
    run_as = f"runuser -u {user} -- " if user else ""
    out = host.run_test(f"{run_as}python3 -c {shell_quote(CONNECT_ONE)} {address} {port}")
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("user", "port", "expected"),
    [
        ("www-data", WEB_PORT, "open"),  # Apache proxies to Traefik
        ("servicehub", API_PORT, "open"),  # the daemon and the reaper ask Traefik's API
        ("traefik", DAEMON_PORT, "open"),  # Traefik forwards first requests to the daemon
        ("nobody", WEB_PORT, "closed"),
        ("nobody", API_PORT, "closed"),
        ("nobody", DAEMON_PORT, "closed"),
        ("www-data", API_PORT, "closed"),  # the API shows every route, the proxy secret included
        ("www-data", DAEMON_PORT, "closed"),
    ],
)
def test_loopback_backends_accept_only_their_clients(host, user, port, expected):
    assert connect_from_hub(host, "127.0.0.1", port, user) == expected


@pytest.mark.parametrize(
    ("user", "expected"),
    [("traefik", "open"), ("servicehub", "open"), ("nobody", "closed"), ("www-data", "closed")],
)
def test_only_traefik_and_the_daemon_connect_to_user_containers(host, alice, user, expected):
    """An app trusts the identity header it is sent: a local account must not talk to it."""
    address = network_of(container_of(host, ALICE))["IPAddress"]
    assert connect_from_hub(host, address, 8000, user) == expected


BIND_PROBE = (
    "import errno,socket,sys; s=socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "try:\n s.bind(('127.0.0.2', int(sys.argv[1]))); print('bound')\n"
    "except OSError as e:\n print(errno.errorcode[e.errno])"
)


@pytest.mark.parametrize("port", sorted(BACKEND_PORTS.values()))
def test_a_local_account_cannot_take_over_a_backend_port(host, port):
    """Were the port unprivileged, a local account could bind it while Traefik or the daemon
    restarts and receive what Apache proxies, the proxy secret included."""
    out = host.run_test(f"runuser -u nobody -- python3 -c {shell_quote(BIND_PROBE)} {port}")
    assert out.stdout.strip() == "EACCES"


def in_container_netns(host, container: dict, script: str) -> str:
    """Run a probe inside a user container's network namespace (as if the app ran it)."""
    pid = container["State"]["Pid"]
    out = host.run(f"nsenter --target {pid} --net python3 -c {shell_quote(script)}")
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


CONNECT_PROBE = """
import ipaddress, json, socket, struct

def docker_dns(name):
    # Docker's embedded DNS answers on 127.0.0.11 inside the container's network namespace
    # (this probe shares that namespace, not the container's resolv.conf).
    query = struct.pack("!HHHHHH", 0x5348, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
    query += struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(3)
        udp.sendto(query, ("127.0.0.11", 53))
        answer = udp.recv(512)
    if struct.unpack("!H", answer[6:8])[0] == 0:
        raise OSError("no such name")
    return socket.inet_ntoa(answer[-4:])  # the (only) A record ends the answer

results = {{}}
for target, port in {targets!r}:
    s = socket.socket(); s.settimeout(3)
    try:
        try:
            address = str(ipaddress.ip_address(target))
        except ValueError:
            address = docker_dns(target)
        results[f"{{target}}:{{port}}"] = "open" if s.connect_ex((address, port)) == 0 else "closed"
    except OSError:
        results[f"{{target}}:{{port}}"] = "unresolved"
    finally:
        s.close()
print(json.dumps(results))
"""


def probe_from(host, container: dict, targets: list[tuple[str, int]]) -> dict[str, str]:
    return json.loads(in_container_netns(host, container, CONNECT_PROBE.format(targets=targets)))


def test_from_a_user_container_the_hosts_services_are_unreachable(host, alice, bob):
    mine = container_of(host, ALICE)
    network = network_of(mine)
    gateway = network["Gateway"]
    own = network["IPAddress"]
    hub_ip = host.run_test("hostname -I").stdout.split()[0]
    ports = [80, 443, 2375, 2376, 22, *BACKEND_PORTS.values(), 9400, 14000, 15000]
    targets = [(own, 8000)] + [(gateway, p) for p in ports] + [(hub_ip, p) for p in ports]
    targets += [("127.0.0.1", p) for p in BACKEND_PORTS.values()]
    results = probe_from(host, mine, targets)
    assert results.pop(f"{own}:8000") == "open", "control: the probe reaches the app itself"
    assert {t: r for t, r in results.items() if r == "open"} == {}


METADATA_PROBE = """
import errno, socket
s = socket.socket(); s.settimeout(5)
code = s.connect_ex(("169.254.169.254", 80))
print(errno.errorcode.get(code, code))
"""


def test_a_user_container_cannot_reach_the_cloud_metadata_service(host, alice):
    """The VM's credentials and user-data live at 169.254.169.254 on most clouds."""
    before = host.run_test("nft list chain inet servicehub containers_out").stdout
    answer = in_container_netns(host, container_of(host, ALICE), METADATA_PROBE)
    after = host.run_test("nft list chain inet servicehub containers_out").stdout
    # Refused by the hub at once (ICMP administratively prohibited), not lost on the way.
    assert answer == "EHOSTUNREACH", answer
    assert before != after  # the metadata rule's counter moved


def test_a_user_container_cannot_reach_another_users_by_address_or_name(host, alice, bob):
    mine = container_of(host, ALICE)
    theirs = container_of(host, "bob@example.org")
    their_ip = network_of(theirs)["IPAddress"]
    their_name = theirs["Name"].lstrip("/")
    results = probe_from(host, mine, [(their_ip, 8000), (their_name, 8000)])
    assert results[f"{their_ip}:8000"] == "closed"
    assert results[f"{their_name}:8000"] == "closed"  # resolves (Docker's DNS), then refused
    # Control: the hub itself (its namespace) does reach bob's app.
    assert connect_from_hub(host, their_ip, 8000) == "open"


def test_no_user_container_has_the_docker_socket_or_host_paths(host, alice, bob):
    for user in (ALICE, "bob@example.org"):
        container = container_of(host, user)
        for mount in container["Mounts"]:
            assert "docker.sock" not in mount["Source"]
            assert mount["Source"].startswith(f"{VOLUMES_ROOT}/"), mount
        assert container["HostConfig"]["Privileged"] is False
        assert container["HostConfig"]["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in container["HostConfig"]["SecurityOpt"]


def ask_dir_helper(host, account: str, request: dict) -> dict:
    """One request to root's directory helper as ``account``: its answer, or {"refused": why}
    when the socket refuses the connection."""
    probe = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as e:\n"
        "    print(json.dumps({'refused': e.strerror}))\n"
        "    sys.exit()\n"
        "s.sendall(sys.argv[2].encode() + b'\\n')\n"
        "print(s.makefile().readline())\n"
    )
    args = [probe, DIRS_SOCKET, json.dumps(request)]
    cmd = host.run(f"runuser -u {account} -- python3 -c " + " ".join(map(shell_quote, args)))
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def test_only_the_daemons_account_may_ask_root_for_a_directory(host, alice):
    # alice's volume was made by the helper: her login started it through its socket.
    assert host.service(DIRS_UNIT).is_running
    request = {"root": "volumes", "name": "whoami-by-nobody", "app": "whoami"}
    assert ask_dir_helper(host, "nobody", request) == {"refused": "Permission denied"}
    assert not host.file(f"{VOLUMES_ROOT}/whoami-by-nobody").exists


@pytest.mark.parametrize(
    ("request_", "refusal"),
    [
        ({"root": "volumes", "name": "../../../../etc/evil", "app": "whoami"}, "path component"),
        ({"root": "/etc", "name": "evil", "app": "whoami"}, "root must be one of"),
        ({"root": "volumes", "name": "evil", "app": "no-such-app"}, "configured apps"),
    ],
)
def test_the_directory_helper_makes_nothing_outside_its_roots(host, request_, refusal):
    answer = ask_dir_helper(host, DAEMON_ACCOUNT, request_)
    assert refusal in answer["error"], answer
    assert not host.file("/etc/evil").exists and not host.file(f"{VOLUMES_ROOT}/evil").exists


def test_the_directory_helper_hands_a_new_directory_to_the_apps_user(host, alice):
    request = {"root": "volumes", "name": "whoami-helper-probe", "app": "whoami"}
    try:
        assert ask_dir_helper(host, DAEMON_ACCOUNT, request) == {"ok": True}
        probe = host.run_test(f"stat -c '%u:%g %a' {VOLUMES_ROOT}/whoami-helper-probe").stdout
        slug = container_of(host, ALICE)["Config"]["Labels"]["servicehub.slug"]
        hers = host.run_test(f"stat -c '%u:%g %a' {VOLUMES_ROOT}/whoami-{slug}").stdout
        assert probe == hers and probe.split()[1] == "700"  # as the daemon's spawn made hers
    finally:
        host.run(f"rmdir {VOLUMES_ROOT}/whoami-helper-probe")


def test_the_firewall_refuses_and_counts_a_container_knocking_on_the_host(host, alice):
    mine = container_of(host, ALICE)
    gateway = network_of(mine)["Gateway"]

    def refusals() -> int:
        chain = host.run_test("nft list chain inet servicehub from_containers").stdout
        return int(re.search(r"counter packets (\d+) bytes \d+ reject", chain).group(1))

    before = refusals()
    assert probe_from(host, mine, [(gateway, 443)]) == {f"{gateway}:443": "closed"}
    assert refusals() > before


# ---- identifier injection ----------------------------------------------------------------------

# Login names of the provider's attack users (molecule/resources/prepare.yml) and their ids.
ODD_IDS = {
    "inject": "`) || Header(`X`, `y`) {{ .Host }} \"'; ../../etc/@/x@example.org",
    "comma": "alice@example.org, bob@example.org",
    "upper": "ALICE@example.org",
    "ligature": "\ufb01@example.org",
    "plainfi": "fi@example.org",
    "long": "l" * 243 + "@example.org",
}
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@pytest.fixture(scope="module")
def odd_users(host, alice) -> dict[str, dict]:
    seen = {}
    for login, user_id in ODD_IDS.items():
        result = browse(host, login)
        assert result["status"] == 200, (login, result["trail"])
        seen[login] = json.loads(result["body"])
        assert seen_by_app(seen[login]).users == [user_id]
    return seen


def test_odd_ids_each_get_their_own_container_and_volume(host, odd_users):
    hostnames = {login: info["hostname"] for login, info in odd_users.items()}
    hostnames["alice"] = container_of(host, ALICE)["Config"]["Hostname"]
    assert len(set(hostnames.values())) == len(hostnames), hostnames
    volumes = {}
    for login, user_id in ODD_IDS.items():
        container = container_of(host, user_id)
        assert container["Config"]["Labels"]["servicehub.user"] == user_id
        (mount,) = container["Mounts"]
        volumes[login] = mount["Source"]
    volumes["alice"] = container_of(host, ALICE)["Mounts"][0]["Source"]
    assert len(set(volumes.values())) == len(volumes), volumes


def test_lookalike_ids_never_share_anything(host, odd_users):
    for a, b in [("ligature", "plainfi"), ("upper", None)]:
        first = container_of(host, ODD_IDS[a])
        second = container_of(host, ODD_IDS[b] if b else ALICE)
        assert first["Id"] != second["Id"]
        assert first["Mounts"][0]["Source"] != second["Mounts"][0]["Source"]
        assert (
            first["Config"]["Labels"]["servicehub.slug"]
            != second["Config"]["Labels"]["servicehub.slug"]
        )


def test_no_name_or_path_is_built_from_a_raw_id(host, odd_users):
    names = host.run_test("docker ps -a --format '{{.Names}}'").stdout.split()
    volumes = host.run_test(f"ls {VOLUMES_ROOT}").stdout.split()
    routes = host.run_test(f"ls {ROUTES_DIR}").stdout.split()
    for name in names + volumes + routes:
        assert SAFE_NAME.match(name), name
        assert len(name) <= 128, name


def test_every_route_traefik_loaded_is_valid_and_matches_one_exact_id(host, odd_users):
    routers = json.loads(
        host.run_test(f"curl -s http://127.0.0.1:{API_PORT}/api/http/routers?per_page=1000").stdout
    )
    assert routers
    broken = [r["name"] for r in routers if r.get("status") != "enabled" or r.get("error")]
    assert broken == []
    # The inject user's rule holds its id as one escaped Go string: no extra matcher appeared.
    session_rules = [
        r["rule"] for r in routers if f"header(`{USER_HEADER.lower()}`" in r.get("rule", "").lower()
    ]
    assert session_rules, routers
    # A session's second router (its page's own background requests, docs/reaper.md) is the
    # session's rule and this fixed matcher: take it off, then nothing else may remain.
    mains = {rule for rule in session_rules if not rule.endswith(BACKGROUND_MATCH)}
    backgrounds = {rule.removesuffix(BACKGROUND_MATCH) for rule in session_rules} - mains
    assert backgrounds == set(), backgrounds  # every background rule extends a session's rule
    assert all(rule.count("Header(") == 2 and "||" not in rule for rule in mains), mains


# What the daemon appends to a session's rule for its background router (servicehub/routes.py).
BACKGROUND_MATCH = (
    " && (((Method(`GET`) || Method(`HEAD`)) && "
    "HeaderRegexp(`Sec-Fetch-Mode`, `^(cors|no-cors|same-origin|websocket)$`)) || "
    "Header(`Sec-Fetch-Mode`, `no-cors`) || HeaderRegexp(`Upgrade`, `(?i)^websocket$`))"
)


@pytest.mark.parametrize("login", ["newline", "padded"])
def test_ids_that_cannot_travel_as_one_header_are_refused(host, alice, bob, login):
    """A line break would inject a second identity header (alice's); blanks around an id would
    arrive trimmed, as bob's. Without Apache's `Require expr` rules both reach those containers."""
    result = browse(host, login)
    assert result["status"] in (401, 403), result["trail"]
    assert "header_user" not in result["body"]
    users = container_users(host)
    assert not [u for u in users if "mallet" in u or u.endswith(" ")], users


def test_a_line_break_in_a_group_cannot_inject_a_header(host, alice):
    """groupinject's second group holds CRLF and a user header line (this hub's name for it)
    naming alice: no part of it may become a header of its own."""
    result = browse(host, "groupinject")
    assert result["status"] == 200, result["trail"]
    info = json.loads(result["body"])
    seen = seen_by_app(info)
    assert seen.users == ["groupinject@example.org"]
    assert not re.search(r"[\r\n]", seen.raw_groups)
    assert all(v != ALICE for _, v in info["headers"]), info["headers"]
    assert container_of(host, "groupinject@example.org")["Config"]["Hostname"] == info["hostname"]
    assert container_of(host, ALICE)["Config"]["Hostname"] != info["hostname"]


# ---- container escape and abuse ---------------------------------------------------------------


def test_requests_cannot_choose_an_image(host, alice):
    attempts = [
        request("GET", "/?image=busybox"),
        request("GET", "/_servicehub/spawn?app=evil&image=busybox"),
        request("POST", "/_servicehub/retry?app=evil", body="image=busybox"),
        request("GET", "/whoami", "X-Servicehub-App: evil", "X-Servicehub-Image: busybox"),
        request("GET", "/", cookie=True).replace(f"Host: {HUB}", "Host: evil.test"),
    ]
    for attempt in attempts:
        assert raw(host, attempt, alice)["status"] != 0
    images = set(host.run_test("docker ps -a --format '{{.Image}}'").stdout.split())
    assert images <= APP_IMAGES, images


def test_user_containers_run_with_the_configured_limits(host, alice):
    config = container_of(host, ALICE)["HostConfig"]
    assert config["PidsLimit"] == 64
    assert config["Memory"] == config["MemorySwap"] == 256 * 1024**2
    assert config["ReadonlyRootfs"] is True
    assert config["CapAdd"] in (None, [])


# ---- session and OpenID Connect ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_login(host) -> dict:
    result = browse(host, "alice", "--save-cookies", "/tmp/alice-fresh.cookies")
    assert result["status"] == 200
    return result


def test_the_authorization_request_carries_state_nonce_and_pkce(fresh_login):
    auth = next(u for u in fresh_login["redirects"] if u.startswith("http://idp.test:9400/auth"))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(auth).query)
    assert query["response_type"] == ["code"]
    assert len(query["state"][0]) >= 16 and len(query["nonce"][0]) >= 16
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43


def test_session_cookies_are_secure_httponly_and_samesite(fresh_login):
    """Scripts cannot read them, plain http never carries them, other sites' posts go without."""
    cookies = [c for c in fresh_login["cookies"] if c["domain"].lstrip(".") == HUB]
    assert any(c["name"].startswith("mod_auth_openidc_session") for c in cookies), cookies
    for cookie in cookies:
        assert cookie["secure"] and cookie["httponly"], cookie
        assert (cookie["samesite"] or "").lower() in ("lax", "strict"), cookie


class Login(NamedTuple):
    callback: str  # path and query: a fresh code and the state
    jar: str  # that browser's cookies (the state cookie)
    agent: str  # its User-Agent, which mod_auth_openidc binds the state to


def stopped_login(host, name: str) -> Login:
    """alice logs in at the provider; the redirect back to the hub is held, not followed."""
    jar = f"/tmp/{name}.cookies"
    result = browse(host, "alice", "--stop-at-callback", "--save-cookies", jar)
    parts = urllib.parse.urlsplit(result["callback"])
    return Login(f"{parts.path}?{parts.query}", jar, result["user_agent"])


def with_query(callback: str, **changes: str) -> str:
    path, _, query = callback.partition("?")
    params = dict(urllib.parse.parse_qsl(query))
    return f"{path}?{urllib.parse.urlencode({**params, **changes})}"


def gives_a_session(answer: dict) -> bool:
    """A session cookie with a value, or the app itself: the login was accepted."""
    cookies = [v for k, v in answer["headers"] if k.lower() == "set-cookie"]
    return "header_user" in answer["body"] or any(
        re.match(r"mod_auth_openidc_session(_chunks|_\d+)?=[^;]", c) for c in cookies
    )


def callback(host, login: Login, path: str | None = None, jar: bool = True) -> dict:
    """The browser's request to the callback (or to `path`, an altered one)."""
    req = request("GET", path or login.callback, f"User-Agent: {login.agent}", cookie=jar,
                  accept="text/html")  # fmt: skip
    return raw(host, req, login.jar if jar else None)


def test_a_replayed_login_callback_is_refused(host):
    """The code and state in a callback URL work once, in the browser that started the login."""
    login = stopped_login(host, "replay")
    assert not gives_a_session(callback(host, login, jar=False))  # stolen URL, another browser
    first = callback(host, login)
    assert gives_a_session(first), first  # control: the genuine callback logs in
    again = callback(host, login)  # replayed, even with the state cookie kept
    assert not gives_a_session(again), again


def test_a_callback_with_a_tampered_state_is_refused(host):
    login = stopped_login(host, "tampered-state")
    state = dict(urllib.parse.parse_qsl(login.callback.partition("?")[2]))["state"]
    assert not gives_a_session(callback(host, login, with_query(login.callback, state=state[::-1])))
    assert gives_a_session(callback(host, login))  # control: untouched, it works


def test_a_callback_with_another_logins_code_is_refused(host):
    """Login A's state and cookie with login B's code: PKCE and the nonce tie a code to A."""
    a, b = stopped_login(host, "login-a"), stopped_login(host, "login-b")
    code_b = dict(urllib.parse.parse_qsl(b.callback.partition("?")[2]))["code"]
    assert not gives_a_session(callback(host, a, with_query(a.callback, code=code_b)))
    assert gives_a_session(callback(host, b))  # control: B's own pair works


def test_claim_rules_are_anchored(host, alice):
    """mallory's groups are 'labs', 'xlab', 'lab ', ' lab', 'lab,lab': none of them is 'lab'."""
    result = browse(host, "mallory")
    assert result["status"] == 403, result["trail"]
    assert "mallory@example.org" not in container_users(host)


def test_no_token_or_login_cookie_reaches_a_user_container(host, alice):
    """With a second login pending (its state cookie in the jar), the app sees every header."""
    pending = raw(host, request("GET", "/whoami", cookie=False, accept="text/html"))
    state = [v.split(";", 1)[0] for k, v in pending["headers"] if k.lower() == "set-cookie"]
    assert any(c.startswith("mod_auth_openidc_state_") for c in state), pending
    app_cookie = "app_pref=dark"  # the app's own cookie must still get through
    jar = "; ".join(["{cookie}", *state, app_cookie])  # one Cookie header: alice's session first
    answer = raw(host, request("GET", "/whoami", f"Cookie: {jar}", cookie=False), alice)
    assert answer["status"] == 200, answer
    seen = json.loads(answer["body"])
    leaked = [
        name
        for name, _ in seen["headers"]
        if re.search(r"oidc|token|authorization|claim|secret", name, re.I)
        or name.lower() == SECRET_HEADER.lower()
    ]
    assert leaked == []
    cookies = "; ".join(v for k, v in seen["headers"] if k.lower() == "cookie")
    assert "mod_auth_openidc" not in cookies
    assert app_cookie in cookies
    assert "eyJ" not in answer["body"]  # no JWT (header.payload.signature) in any header value
    assert all(not k.startswith("OIDC") for k in seen["env"])


def test_logout_ends_the_session_and_the_old_cookie_is_dead(host):
    result = browse(host, "alice", "--save-cookies", "/tmp/alice-logout.cookies", "--logout")
    assert "idp.test" in result["after_logout_url"], result["trail"]
    replay = raw(host, request("GET", "/whoami"), "/tmp/alice-logout.cookies")
    assert is_sent_to_login(replay), replay


# ---- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_scan(host, tmp_path_factory) -> dict:
    """A real TLS scanner (sslyze) from outside the hub, against Apache's :443."""
    address = hub_address(host)
    report = tmp_path_factory.mktemp("sslyze") / "scan.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sslyze",
            f"--json_out={report}",
            "--quiet",
            "--mozilla_config=disable",
            "--sslv2",
            "--sslv3",
            "--tlsv1",
            "--tlsv1_1",
            "--tlsv1_2",
            "--tlsv1_3",
            "--certinfo",
            "--http_headers",
            "--heartbleed",
            "--robot",
            "--compression",
            "--reneg",
            f"{HUB}:443{{{address}}}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    (result,) = json.loads(report.read_text())["server_scan_results"]
    assert result["scan_status"] == "COMPLETED", result
    return result["scan_result"]


def accepted(scan: dict, protocol: str) -> list[str]:
    suites = scan[f"{protocol}_cipher_suites"]["result"]["accepted_cipher_suites"]
    return [s["cipher_suite"]["name"] for s in suites]


def test_only_tls_1_2_and_1_3_are_offered(tls_scan):
    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert accepted(tls_scan, old) == [], old
    assert accepted(tls_scan, "tls_1_3")
    assert accepted(tls_scan, "tls_1_2")


def test_tls_1_2_suites_are_forward_secret_aead_only(tls_scan):
    for suite in accepted(tls_scan, "tls_1_2"):
        assert suite.startswith("TLS_ECDHE_") or suite.startswith("TLS_DHE_"), suite
        assert "GCM" in suite or "CHACHA20" in suite, suite


def test_hsts_and_known_tls_attacks(tls_scan):
    hsts = tls_scan["http_headers"]["result"]["strict_transport_security_header"]
    assert hsts and hsts["max_age"] >= 15768000
    assert tls_scan["heartbleed"]["result"]["is_vulnerable_to_heartbleed"] is False
    assert tls_scan["tls_compression"]["result"]["supports_compression"] is False
    assert (
        tls_scan["session_renegotiation"]["result"]["is_vulnerable_to_client_renegotiation_dos"]
        is False
    )
    assert tls_scan["robot"]["result"]["robot_result"].startswith("NOT_VULNERABLE")


# ---- unit sandboxing ---------------------------------------------------------------------------


def documented_exposure() -> dict[str, float]:
    """The exposure ceilings SECURITY.md states, from its table."""
    text = (ROOT / "SECURITY.md").read_text()
    rows = re.findall(r"^\| `([\w.-]+\.service)` \| ([\d.]+) \|", text, re.M)
    return {unit: float(score) for unit, score in rows}


def test_the_documented_units_are_the_hubs_services():
    assert set(documented_exposure()) >= {
        "servicehub.service",
        "servicehub-reaper.service",
        "traefik.service",
    }


@pytest.mark.parametrize("unit", sorted(documented_exposure()))
def test_unit_exposure_stays_at_or_below_the_documented_score(host, unit):
    out = host.run_test(f"systemd-analyze security --no-pager {unit}").stdout
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    assert score <= documented_exposure()[unit], out[-400:]
