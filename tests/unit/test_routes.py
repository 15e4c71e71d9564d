import ast
import json

import pytest
import yaml

from servicehub.config import parse_config
from servicehub.routes import (
    RouteStore,
    SessionRoute,
    dump_route_file,
    go_string_literal,
    render_base,
    render_session,
    session_file_name,
    session_priority,
)

from .test_identity import NASTY_IDS


def config(secret=None, **app):
    env = {"SERVICEHUB_PROXY_SECRET": secret} if secret else {}
    return parse_config({"hub": "hub", "apps": {"whoami": {"image": "img", **app}}}, env)


@pytest.mark.parametrize("user", [*NASTY_IDS, "new\nline", "tab\there", "😀"])
def test_go_literal_round_trips_and_hides_every_special_character(user):
    literal = go_string_literal(user)
    inner = literal[1:-1]
    # Only safe characters and backslash escapes: no quote, backtick, brace, space or newline.
    assert all(c.isascii() and (c.isalnum() or c in "._-\\") for c in inner), literal
    # Go's and Python's \u / \U escapes agree, so Python can decode it back.
    assert ast.literal_eval(literal) == user


def test_session_rule_matches_exact_user_app_and_secret():
    cfg = config(secret="s" * 20, route={"path_prefix": "/app/", "host": "hub.example.org"})
    route = SessionRoute(app="whoami", slug="alice-x", user="a`b", url="http://172.18.0.2:8000")
    data = render_session(cfg, cfg.apps["whoami"], route)
    router = data["http"]["routers"]["hub-whoami-alice-x"]
    assert router["rule"] == (
        'Header(`X-Servicehub-User`, "a\\u0060b") && Host(`hub.example.org`) && '
        "(Path(`/app`) || PathPrefix(`/app/`)) && Header(`X-Servicehub-Proxy-Secret`, `"
        + "s" * 20
        + "`)"
    )
    assert router["middlewares"] == ["hub-strip-secret@file", "hub-whoami-alice-x-identity@file"]
    identity = data["http"]["middlewares"]["hub-whoami-alice-x-identity"]
    assert identity == {"headers": {"customRequestHeaders": {"X-Servicehub-User": "a`b"}}}
    servers = data["http"]["services"]["hub-whoami-alice-x"]["loadBalancer"]["servers"]
    assert servers == [{"url": "http://172.18.0.2:8000"}]


def test_a_pages_background_requests_take_the_sessions_second_router():
    cfg = config(secret="s" * 20)
    route = SessionRoute(app="whoami", slug="alice-x", user="alice", url="http://172.18.0.2:8000")
    routers = render_session(cfg, cfg.apps["whoami"], route)["http"]["routers"]
    main, background = routers["hub-whoami-alice-x"], routers["hub-whoami-alice-x-background"]
    # Everything the session's router matches, and only a script's reads and beacons on top.
    assert background["rule"] == (
        main["rule"] + " && (((Method(`GET`) || Method(`HEAD`)) && "
        "HeaderRegexp(`Sec-Fetch-Mode`, `^(cors|no-cors|same-origin|websocket)$`)) || "
        "Header(`Sec-Fetch-Mode`, `no-cors`) || HeaderRegexp(`Upgrade`, `(?i)^websocket$`))"
    )
    assert background["priority"] == main["priority"] + 1
    assert (background["service"], background["middlewares"]) == (
        main["service"],
        main["middlewares"],
    )


def test_base_routes_send_unrouted_requests_to_the_daemon():
    cfg = config()
    routers = render_base(cfg)["http"]["routers"]
    assert routers["hub-spawn"]["priority"] < routers["hub-internal"]["priority"]
    assert "hub-strip-secret" not in render_base(cfg)["http"]["middlewares"]
    # A booting session's 502s go to the daemon (its wait page), as a 503.
    booting = render_base(cfg)["http"]["middlewares"]["hub-booting"]["errors"]
    assert booting["service"] == "hub-daemon" and booting["statusRewrites"] == {"502-504": 503}


def test_each_app_has_a_spawn_router_just_below_its_session_routers():
    cfg = parse_config(
        {
            "hub": "hub",
            "apps": {
                "root": {"image": "a"},
                "nb": {"image": "b", "route": {"path_prefix": "/nb/"}},
            },
        }
    )
    routers = render_base(cfg)["http"]["routers"]
    root_session = session_priority(cfg.apps["root"])
    nb_spawn = routers["hub-spawn-nb"]
    # A user with a session of the app at "/" still reaches the daemon for /nb/.
    assert root_session < nb_spawn["priority"] < session_priority(cfg.apps["nb"])
    assert nb_spawn["rule"] == "(Path(`/nb`) || PathPrefix(`/nb/`))"


def test_store_writes_parseable_files_and_reconciles(tmp_path):
    cfg = parse_config(
        {
            "hub": "hub",
            "traefik": {"routes_dir": str(tmp_path)},
            "apps": {"whoami": {"image": "img"}},
        }
    )
    store = RouteStore(cfg)
    store.write_base()
    keep = SessionRoute(app="whoami", slug="keep", user="k", url="http://10.0.0.2:8000")
    stale = tmp_path / session_file_name("hub", "whoami", "orphan")
    stale.write_text("{}")
    other_hub = tmp_path / "otherhub-session-whoami-x.yml"
    other_hub.write_text("{}")
    assert store.reconcile([keep]) == (1, 1)
    assert not stale.exists() and other_hub.exists()
    assert store.reconcile([keep]) == (0, 0)  # unchanged files are not rewritten
    written = yaml.safe_load((tmp_path / session_file_name("hub", "whoami", "keep")).read_text())
    assert written == json.loads(
        (tmp_path / session_file_name("hub", "whoami", "keep")).read_text()
    )
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    assert store.remove_session("whoami", "keep") and not store.remove_session("whoami", "keep")


@pytest.mark.parametrize("user", NASTY_IDS)
def test_session_files_read_back_to_the_exact_id_with_no_template_syntax(user):
    cfg = config(secret="s" * 20)
    route = SessionRoute(app="whoami", slug="x", user=user, url="http://172.18.0.2:8000")
    text = dump_route_file(render_session(cfg, cfg.apps["whoami"], route))
    assert "{{" not in text and "}}" not in text  # Traefik templates every file first
    assert text.isascii()
    middleware = yaml.safe_load(text)["http"]["middlewares"]["hub-whoami-x-identity"]
    assert middleware["headers"]["customRequestHeaders"]["X-Servicehub-User"] == user


def test_sessions_are_dialled_with_a_short_timeout_defined_once_in_the_base_file():
    cfg = config()
    route = SessionRoute(app="whoami", slug="alice-x", user="alice", url="http://10.0.0.2:30001")
    service = render_session(cfg, cfg.apps["whoami"], route)["http"]["services"][
        "hub-whoami-alice-x"
    ]
    assert service["loadBalancer"]["serversTransport"] == "hub-sessions@file"
    transports = render_base(cfg)["http"]["serversTransports"]
    assert transports == {"hub-sessions": {"forwardingTimeouts": {"dialTimeout": "5s"}}}
