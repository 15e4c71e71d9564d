"""The hub's configuration: one YAML file, typed and validated at start-up.

Every error names the offending key as a dotted path (``apps.notebook.limits.memory``) so
an operator can fix the file without reading code. Unknown keys are errors too: a typo must
not silently fall back to a default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import yaml

from .app_docker import DockerSettings, parse_docker_settings
from .app_mounts import AppMounts, HostRoots, check_environment, check_targets, parse_mounts
from .app_mounts import parse_roots as parse_host_roots
from .backend_config import BackendConfig, check_backend, parse_backend
from .capacity_config import CapacityConfig, parse_capacity
from .config_section import ABS_PATH_RE, Section, parse_size

# ConfigError is part of this module's interface (the CLI and tests catch it here).
from .config_section import ConfigError as ConfigError
from .host_mounts import check_host
from .metrics_config import MetricsConfig, parse_metrics
from .pages_config import AppPage, PagesConfig, parse_app_page, parse_pages

DEFAULT_CONFIG_PATH = Path("/etc/servicehub/servicehub.yml")

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
HEADER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
PATH_PREFIX_RE = re.compile(r"^/([A-Za-z0-9._~-]+/)*$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
USER_RE = re.compile(r"^(\d{1,10}):(\d{1,10})$")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]{1,250}\.service$")
ACCOUNT_RE = re.compile(r"^([a-z_][a-z0-9_-]{0,31}\$?|\d{1,10})$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VOLUME_FIELDS = {"app", "slug"}
RESERVED_PREFIX = "/_servicehub/"

DEFAULT_GRACE = 300.0


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpus: float
    pids: int


@dataclass(frozen=True)
class Readiness:
    kind: str  # "http" or "tcp"
    path: str  # for http: the path probed, relative to nothing (absolute)


@dataclass(frozen=True)
class VolumeConfig:
    name: str  # template with {app} and {slug}
    mount: str
    read_only: bool = False


@dataclass(frozen=True)
class AppConfig:
    name: str
    image: str
    port: int
    entrypoint: list[str] | None
    command: list[str] | None
    environment: dict[str, str]
    path_prefix: str
    host: str | None
    uid: int
    gid: int
    limits: Limits
    read_only: bool
    tmpfs: dict[str, str]
    volume: VolumeConfig | None
    networks: list[str]
    readiness: Readiness
    start_timeout: float
    idle_timeout: float
    max_lifetime: float
    grace: float  # never reaped for idleness this soon after its spawn
    cpu_counts: bool  # CPU use above cpu_threshold counts as activity
    cpu_threshold: float  # in cores (0.1 = a tenth of one core), averaged between reaper runs
    activity_bytes: int  # network bytes per minute above the background level that count
    background_windows: int  # reaper runs whose quietest traffic is the background level; 0: none
    activity_endpoint: str | None  # path of the app's own last-activity report, if any
    allow_users: frozenset[str]
    allow_groups: frozenset[str]
    mounts: AppMounts = field(default_factory=AppMounts)  # datasets, group dirs, secrets
    docker: DockerSettings = field(default_factory=DockerSettings)
    page: AppPage = field(default_factory=AppPage)  # its entry on the home page

    def allows(self, user: str, groups: frozenset[str]) -> bool:
        if not self.allow_users and not self.allow_groups:
            return True
        return user in self.allow_users or bool(groups & self.allow_groups)

    def volume_name(self, slug: str) -> str | None:
        if self.volume is None:
            return None
        return self.volume.name.format(app=self.name, slug=slug)


@dataclass(frozen=True)
class IdentityConfig:
    user_header: str
    groups_header: str
    issuer: str
    proxy_secret_header: str


@dataclass(frozen=True)
class TraefikConfig:
    routes_dir: Path
    entrypoint: str
    api_url: str
    access_log: Path  # Traefik's JSON access log: the reaper's main activity signal


@dataclass(frozen=True)
class ReaperConfig:
    """Whose journal entries the reaper believes (docs/reaper.md, "Which journal entries count").

    journald itself sets ``_SYSTEMD_UNIT`` (from the sender's cgroup) and ``_UID`` (from the
    socket's credentials); a client cannot. Only entries of ``daemon_unit`` sent by
    ``daemon_user`` count. The unit is the one the servicehub role installs; the user defaults
    to the account the reaper runs as, which is the daemon's on an installed hub (both units
    run as the role's account), so the account name is defined in one place only.
    """

    daemon_unit: str = "servicehub.service"
    daemon_user: str | None = None  # name or numeric uid; None: the reaper's own account


@dataclass(frozen=True)
class Config:
    hub: str
    listen_host: str
    listen_port: int
    docker_socket: Path
    volumes_root: Path
    state_dir: Path  # reaper state and the per-session lock files
    identity: IdentityConfig
    traefik: TraefikConfig
    apps: dict[str, AppConfig] = field(default_factory=dict)
    reaper: ReaperConfig = field(default_factory=ReaperConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    roots: HostRoots = field(default_factory=HostRoots)  # where app mounts may come from
    pages: PagesConfig = field(default_factory=PagesConfig)  # home and admin pages
    backend: BackendConfig = field(default_factory=BackendConfig)  # this host, or a swarm
    capacity: CapacityConfig = field(default_factory=CapacityConfig)  # sessions at once
    # Root's helper that makes users' and groups' directories (dir_helper.py); None: the
    # daemon makes them itself with CAP_CHOWN.
    dir_helper: Path | None = None
    # Not from the file: secrets come from the environment only.
    proxy_secret: str | None = None

    @property
    def daemon_url(self) -> str:
        return f"http://{self.listen_host}:{self.listen_port}"


def _command(section: Section, name: str) -> list[str] | None:
    value = section.raw(name, None)
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigError(section.key(name), "must be a list of strings (exec form), not a string")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(section.key(name), "must be a list of strings")
    return list(value)


def _environment(s: Section) -> dict[str, str]:
    env_raw = s.raw("environment", {})
    if not isinstance(env_raw, Mapping):
        raise ConfigError(s.key("environment"), "must be a mapping of NAME: value")
    environment: dict[str, str] = {}
    for env_name, env_value in env_raw.items():
        if not isinstance(env_name, str) or not ENV_NAME_RE.match(env_name):
            raise ConfigError(f"{s.key('environment')}.{env_name}", "invalid variable name")
        if env_name.startswith("SERVICEHUB_"):
            raise ConfigError(
                f"{s.key('environment')}.{env_name}", "SERVICEHUB_* is set by the hub"
            )
        if not isinstance(env_value, (str, int, float, bool)):
            raise ConfigError(f"{s.key('environment')}.{env_name}", "must be a scalar")
        environment[env_name] = str(env_value)
    return environment


def _parse_app(name: str, data: Any, roots: HostRoots) -> AppConfig:
    """One ``apps.<name>`` section, its keys read in the order of the documented schema."""
    path = f"apps.{name}"
    if not NAME_RE.match(name):
        raise ConfigError(
            path, "app names are 1-30 characters of a-z, 0-9 and '-', starting with a letter"
        )
    s = Section(data, path)
    image = s.text("image", pattern=IMAGE_RE, hint="a Docker image reference")
    port = s.integer("port", 8000, low=1, high=65535)
    entrypoint = _command(s, "entrypoint")
    command = _command(s, "command")
    environment = _environment(s)
    path_prefix, host = _route(s.section("route"))
    uid, gid = _user_ids(s)
    limits = _limits(s.section("limits"))
    read_only = s.flag("read_only", True)
    tmpfs = _tmpfs(s)
    volume = _volume(s)
    mounts = parse_mounts(s, roots)
    docker = parse_docker_settings(s, limits.memory_bytes)
    networks = _networks(s)
    readiness = _readiness(s.section("readiness"), path_prefix)
    lifetimes = _lifetimes(s)
    activity = _activity_signals(s, limits)
    allow_users, allow_groups = _allow(s.section("allow"))
    page = parse_app_page(s)
    s.finish()
    check_environment(path, mounts, environment)
    check_targets(path, _targets(volume, tmpfs, mounts))
    return AppConfig(
        name=name,
        image=image,
        port=port,
        entrypoint=entrypoint,
        command=command,
        environment=environment,
        path_prefix=path_prefix,
        host=host,
        uid=uid,
        gid=gid,
        limits=limits,
        read_only=read_only,
        tmpfs=tmpfs,
        volume=volume,
        networks=networks,
        readiness=readiness,
        allow_users=allow_users,
        allow_groups=allow_groups,
        mounts=mounts,
        docker=docker,
        page=page,
        **lifetimes,
        **activity,
    )


def _route(route: Section) -> tuple[str, str | None]:
    """``route``: the path prefix and the optional host the app is served under."""
    path_prefix: str = route.text(
        "path_prefix",
        "/",
        pattern=PATH_PREFIX_RE,
        hint="an absolute path that ends with '/', like /notebook/",
    )
    if (path_prefix + "/").startswith(RESERVED_PREFIX) or path_prefix.startswith(RESERVED_PREFIX):
        raise ConfigError(route.key("path_prefix"), f"{RESERVED_PREFIX} is reserved for the hub")
    host: str | None = route.text("host", None, pattern=HOSTNAME_RE, hint="a lower-case DNS name")
    route.finish()
    return path_prefix, host


def _user_ids(s: Section) -> tuple[int, int]:
    """``user``: the numeric UID and GID the app runs as, never root."""
    user = s.text("user", "1000:1000", pattern=USER_RE, hint="numeric UID:GID, like 1000:1000")
    m = USER_RE.match(user)
    assert m is not None
    uid, gid = int(m.group(1)), int(m.group(2))
    if uid == 0:
        raise ConfigError(s.key("user"), "apps never run as root (uid 0)")
    return uid, gid


def _limits(lim: Section) -> Limits:
    limits = Limits(
        memory_bytes=parse_size(lim.raw("memory", "1g"), lim.key("memory")),
        cpus=_positive_float(lim, "cpus", 1.0),
        pids=lim.integer("pids", 256, low=16, high=1_000_000),
    )
    lim.finish()
    if limits.memory_bytes < 16 * 1024**2:
        raise ConfigError(lim.key("memory"), "must be at least 16m")
    return limits


def _tmpfs(s: Section) -> dict[str, str]:
    tmpfs_raw = s.raw("tmpfs", {"/tmp": "rw,noexec,nosuid,size=64m"})
    if not isinstance(tmpfs_raw, Mapping):
        raise ConfigError(s.key("tmpfs"), "must be a mapping of mount path: options")
    tmpfs: dict[str, str] = {}
    for mount, options in tmpfs_raw.items():
        if not isinstance(mount, str) or not ABS_PATH_RE.match(mount) or ".." in mount:
            raise ConfigError(f"{s.key('tmpfs')}.{mount}", "must be an absolute path")
        if not isinstance(options, str) or not re.match(r"^[a-z0-9=,]*$", options):
            raise ConfigError(f"{s.key('tmpfs')}.{mount}", "options must look like rw,size=64m")
        tmpfs[mount] = options
    return tmpfs


def _volume(s: Section) -> VolumeConfig | None:
    """``volume``: absent or null means none; a mapping, even empty, means one (defaults apply)."""
    vol_raw = s.raw("volume", None)
    if vol_raw is None:
        return None
    v = Section(vol_raw, s.key("volume"))
    template = v.text("name", "{app}-{slug}")
    _check_volume_template(template, v.key("name"))
    mount = v.text("mount", "/data", pattern=ABS_PATH_RE, hint="an absolute path")
    if ".." in mount or mount == "/":
        raise ConfigError(v.key("mount"), "must be an absolute path below /")
    read_only = v.flag("read_only", False)
    v.finish()
    return VolumeConfig(name=template, mount=mount, read_only=read_only)


def _targets(
    volume: VolumeConfig | None, tmpfs: dict[str, str], mounts: AppMounts
) -> dict[str, str]:
    """Every container path the app mounts something at, by the key that sets it."""
    targets = {f"tmpfs.{path}": path for path in tmpfs}
    if volume is not None:
        targets["volume.mount"] = volume.mount
    targets |= {f"datasets[{i}].mount": d.mount for i, d in enumerate(mounts.datasets)}
    targets |= {f"group_dirs[{i}].mount": g.mount for i, g in enumerate(mounts.group_dirs)}
    targets |= {f"secrets.{secret.name}": secret.mount for secret in mounts.secrets}
    return targets


def _networks(s: Section) -> list[str]:
    """``networks``: extra Docker networks to join; never Docker's own host, none or default
    bridge (host networking, or a bridge where every container reaches every other)."""
    networks = s.str_list("networks", pattern=re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"))
    for index, network in enumerate(networks):
        if network in ("host", "none", "bridge"):
            raise ConfigError(
                f"{s.key('networks')}[{index}]", f"Docker's {network} network is refused"
            )
    return networks


def _readiness(r: Section, default_path: str) -> Readiness:
    """``readiness``: how the hub knows a new container serves; probes the route by default."""
    kind = r.text("type", "http", pattern=re.compile(r"^(http|tcp)$"), hint="http or tcp")
    probe_path = r.text(
        "path", default_path, pattern=re.compile(r"^/[\x21-\x7e]*$"), hint="an absolute URL path"
    )
    r.finish()
    return Readiness(kind=kind, path=probe_path)


class _Lifetimes(TypedDict):
    start_timeout: float
    idle_timeout: float
    max_lifetime: float
    grace: float


def _lifetimes(s: Section) -> _Lifetimes:
    """How long a session may take to start, sit idle, live at all, and be spared at first."""
    start_timeout = s.duration("start_timeout", 60)
    idle_timeout = s.duration("idle_timeout", "1h")
    max_lifetime = s.duration("max_lifetime", "1d")
    # The default never stretches a short idle_timeout; a longer one given is refused.
    grace = s.duration("grace", min(DEFAULT_GRACE, idle_timeout), zero=True)
    if grace > idle_timeout:
        raise ConfigError(
            s.key("grace"),
            f"{_seconds(grace)} is longer than idle_timeout ({_seconds(idle_timeout)}): a session "
            f"nobody uses would stay {_seconds(grace)}, not {_seconds(idle_timeout)}; make grace "
            "at most idle_timeout",
        )
    return _Lifetimes(
        start_timeout=start_timeout,
        idle_timeout=idle_timeout,
        max_lifetime=max_lifetime,
        grace=grace,
    )


class _ActivitySignals(TypedDict):
    cpu_counts: bool
    cpu_threshold: float
    activity_bytes: int
    background_windows: int
    activity_endpoint: str | None


# The background level of a session's traffic is its quietest minute among this many reaper runs.
BACKGROUND_WINDOWS = 5
MAX_BACKGROUND_WINDOWS = 60


def _activity_signals(s: Section, limits: Limits) -> _ActivitySignals:
    """What, besides requests through Traefik, tells the reaper a session is in use."""
    cpu_counts = s.flag("cpu_counts", True)
    cpu_threshold = _positive_float(s, "cpu_threshold", 0.1)
    if cpu_counts and limits.cpus <= cpu_threshold:
        # Both in cores: a container capped at limits.cpus never averages more than that.
        raise ConfigError(
            s.key("cpu_threshold"),
            f"{cpu_threshold:g} cores is not below limits.cpus ({limits.cpus:g}): the container "
            "can never use more, so its CPU would never count as activity; lower "
            "cpu_threshold, raise limits.cpus or set cpu_counts: false",
        )
    activity_bytes = parse_size(s.raw("activity_bytes", "8k"), s.key("activity_bytes"))
    background_windows = s.integer(
        "background_windows", BACKGROUND_WINDOWS, low=0, high=MAX_BACKGROUND_WINDOWS
    )
    activity_endpoint = s.text(
        "activity_endpoint",
        None,
        pattern=re.compile(r"^/[\x21-\x7e]*$"),
        hint="an absolute URL path on the app, like /api/activity",
    )
    return _ActivitySignals(
        cpu_counts=cpu_counts,
        cpu_threshold=cpu_threshold,
        activity_bytes=activity_bytes,
        background_windows=background_windows,
        activity_endpoint=activity_endpoint,
    )


def _allow(allow: Section) -> tuple[frozenset[str], frozenset[str]]:
    """``allow``: the users and groups that may open the app; both empty means everyone."""
    allow_users = frozenset(allow.str_list("users"))
    allow_groups = frozenset(allow.str_list("groups"))
    allow.finish()
    return allow_users, allow_groups


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _positive_float(section: Section, name: str, default: float) -> float:
    value = section.raw(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(section.key(name), f"must be a positive number, got {value!r}")
    return float(value)


def _check_volume_template(template: str, key: str) -> None:
    """Only {app} and {slug} may appear: both are safe names, so the result is too."""
    fields = set(re.findall(r"{([^{}]*)}", template))
    if "slug" not in fields:
        raise ConfigError(key, "must contain {slug}, or users would share a volume")
    if not fields <= VOLUME_FIELDS:
        raise ConfigError(key, f"only {{app}} and {{slug}} may be used, got {sorted(fields)}")
    literal = re.sub(r"{(app|slug)}", "", template)
    if not re.match(r"^[A-Za-z0-9_.-]*$", literal) or template.startswith((".", "-")):
        raise ConfigError(key, "may only contain letters, digits, '_', '.', '-' besides the fields")


def parse_config(data: Any, environ: Mapping[str, str] | None = None) -> Config:
    """The whole file, validated; its sections read in the order of the documented schema."""
    environ = environ or {}
    top = Section(data, "")
    hub = top.text(
        "hub",
        "servicehub",
        pattern=NAME_RE,
        hint="1-30 characters of a-z, 0-9 and '-'; prefixes container names",
    )
    listen_host, listen_port = _listen(top.section("listen"))
    docker_socket = _docker_socket(top.section("docker"))
    volumes_root = Path(
        top.text("volumes_root", "/var/lib/servicehub/volumes", pattern=ABS_PATH_RE)
    )
    state_dir = Path(top.text("state_dir", "/var/lib/servicehub", pattern=ABS_PATH_RE))
    dir_helper = top.text("dir_helper", None, pattern=ABS_PATH_RE)
    identity = _identity(top.section("identity"))
    traefik = _traefik(top.section("traefik"))
    roots = parse_host_roots(
        top,
        {
            "volumes_root": str(volumes_root),
            "state_dir": str(state_dir),
            "traefik.routes_dir": str(traefik.routes_dir),
            "docker.socket": str(docker_socket),
        },
    )
    apps = _apps(top, roots)
    reaper = _reaper(top.section("reaper"))
    metrics = parse_metrics(top.section("metrics"), listen_port)
    pages = parse_pages(top.section("pages"))
    backend = parse_backend(top.section("backend"))
    check_backend(backend, apps)
    capacity = parse_capacity(top.section("capacity"), list(apps))
    top.finish()
    proxy_secret = _proxy_secret(environ)
    return Config(
        hub=hub,
        listen_host=listen_host,
        listen_port=listen_port,
        docker_socket=docker_socket,
        volumes_root=volumes_root,
        state_dir=state_dir,
        identity=identity,
        traefik=traefik,
        apps=apps,
        reaper=reaper,
        metrics=metrics,
        roots=roots,
        pages=pages,
        backend=backend,
        capacity=capacity,
        dir_helper=Path(dir_helper) if dir_helper is not None else None,
        proxy_secret=proxy_secret,
    )


def _listen(listen: Section) -> tuple[str, int]:
    """``listen``: where the daemon serves; loopback only, as identity enters through Apache."""
    listen_host: str = listen.text("host", "127.0.0.1")
    try:
        if not ipaddress.ip_address(listen_host).is_loopback:
            raise ConfigError(
                listen.key("host"),
                "must be a loopback address: identity enters only through Apache",
            )
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            listen.key("host"), f"must be an IP address, got {listen_host!r}"
        ) from None
    listen_port = listen.integer("port", 8090, low=1, high=65535)
    listen.finish()
    return listen_host, listen_port


def _docker_socket(docker: Section) -> Path:
    docker_socket = Path(docker.text("socket", "/var/run/docker.sock", pattern=ABS_PATH_RE))
    docker.finish()
    return docker_socket


def _identity(ident: Section) -> IdentityConfig:
    identity = IdentityConfig(
        user_header=ident.text("user_header", "X-Servicehub-User", pattern=HEADER_RE),
        groups_header=ident.text("groups_header", "X-Servicehub-Groups", pattern=HEADER_RE),
        issuer=ident.text("issuer", "default"),
        proxy_secret_header=ident.text(
            "proxy_secret_header", "X-Servicehub-Proxy-Secret", pattern=HEADER_RE
        ),
    )
    ident.finish()
    return identity


def _traefik(tr: Section) -> TraefikConfig:
    api_url = tr.text(
        "api_url",
        "http://127.0.0.1:8099",
        pattern=re.compile(r"^http://(127\.\d+\.\d+\.\d+|\[::1\]|localhost):\d+$"),
        hint="http://127.0.0.1:PORT",
    )
    traefik = TraefikConfig(
        routes_dir=Path(tr.text("routes_dir", "/etc/traefik/dynamic", pattern=ABS_PATH_RE)),
        entrypoint=tr.text("entrypoint", "web", pattern=re.compile(r"^[A-Za-z0-9_-]{1,64}$")),
        api_url=api_url,
        access_log=Path(tr.text("access_log", "/var/log/traefik/access.json", pattern=ABS_PATH_RE)),
    )
    tr.finish()
    return traefik


def _apps(top: Section, roots: HostRoots) -> dict[str, AppConfig]:
    apps_raw = top.raw("apps", required=True)
    if not isinstance(apps_raw, Mapping) or not apps_raw:
        raise ConfigError("apps", "must define at least one app")
    apps = {str(name): _parse_app(str(name), app, roots) for name, app in apps_raw.items()}
    _check_routes_distinct(apps)
    return apps


def _reaper(rp: Section) -> ReaperConfig:
    reaper = ReaperConfig(
        daemon_unit=rp.text(
            "daemon_unit",
            ReaperConfig.daemon_unit,
            pattern=UNIT_RE,
            hint="a systemd service unit name, like servicehub.service",
        ),
        daemon_user=rp.text(
            "daemon_user", None, pattern=ACCOUNT_RE, hint="an account name or a numeric uid"
        ),
    )
    rp.finish()
    return reaper


def _proxy_secret(environ: Mapping[str, str]) -> str | None:
    """``SERVICEHUB_PROXY_SECRET``: a secret, so from the environment only, never the file."""
    secret = environ.get("SERVICEHUB_PROXY_SECRET") or None
    if secret is not None and not re.match(r"^[A-Za-z0-9_-]{16,256}$", secret):
        raise ConfigError(
            "SERVICEHUB_PROXY_SECRET", "must be 16-256 characters of A-Z, a-z, 0-9, '_', '-'"
        )
    return secret


def _check_routes_distinct(apps: Mapping[str, AppConfig]) -> None:
    seen: dict[tuple[str | None, str], str] = {}
    for app in apps.values():
        route = (app.host, app.path_prefix)
        if route in seen:
            raise ConfigError(f"apps.{app.name}.route", f"same route as app {seen[route]!r}")
        seen[route] = app.name


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from None
    config = parse_config(data, environ)
    check_host(config)  # the file is this host's: its mount sources must be here, as written
    return config
