#!/usr/bin/env python3
"""Minimal servicehub app: shows who the hub says the user is.

Standard library only, so it runs on a bare Debian base image. It never
writes outside /tmp and SERVICEHUB_DATA_DIR, so it works with a read-only
root filesystem.
"""

import base64
import hashlib
import html
import json
import os
import re
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER_HEADER = "X-Servicehub-User"
GROUPS_HEADER = "X-Servicehub-Groups"
IDENTITY_VARS = {"X_SERVICEHUB_USER", "X_SERVICEHUB_GROUPS"}
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_DATA_BYTES = 1024 * 1024
MAX_FRAME_BYTES = 1024 * 1024
MAX_BURN_SECONDS = 600
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
# Paths that are not a person using the app: probes and the hub's own activity question.
NOT_ACTIVITY = {"healthz", "activity"}

# What the hub's reaper asks at GET <base>activity (apps.<name>.activity_endpoint).
activity = {"last": time.time()}
burn = {"until": 0.0}
lock = threading.Lock()


def touch():
    with lock:
        activity["last"] = max(activity["last"], time.time())


def burn_cpu():
    # A busy loop in its own thread: CPU use without any request or traffic.
    while time.time() < burn["until"]:
        pass


def ws_recv(rfile):
    """One frame from the client: (opcode, fin, payload), or None when the stream ended."""
    head = rfile.read(2)
    if len(head) < 2:
        return None
    fin, opcode = head[0] & 0x80, head[0] & 0x0F
    masked, size = head[1] & 0x80, head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", rfile.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", rfile.read(8))[0]
    if size > MAX_FRAME_BYTES:
        return None
    mask = rfile.read(4) if masked else b""
    data = rfile.read(size)
    if len(data) < size:
        return None
    if masked and size:
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        data = (int.from_bytes(data, "big") ^ key).to_bytes(size, "big")
    return opcode, bool(fin), data


def ws_send(wfile, opcode, data):
    head = bytes([0x80 | opcode])
    if len(data) < 126:
        head += bytes([len(data)])
    elif len(data) < 65536:
        head += bytes([126]) + struct.pack("!H", len(data))
    else:
        head += bytes([127]) + struct.pack("!Q", len(data))
    wfile.write(head + data)


def base_url():
    # Normalise so routing can rely on a leading and trailing slash.
    base = os.environ.get("SERVICEHUB_BASE_URL", "/").strip() or "/"
    return "/" + base.strip("/") + "/" if base.strip("/") else "/"


def data_dir():
    path = os.environ.get("SERVICEHUB_DATA_DIR", "")
    return path if path and os.path.isdir(path) else None


def valid_name(name):
    # "." and ".." match the character class but would escape the file API.
    return bool(NAME_RE.fullmatch(name)) and name not in (".", "..")


class Handler(BaseHTTPRequestHandler):
    server_version = "servicehub-whoami/1"
    # Stops a stalled client from pinning a thread forever.
    timeout = 30

    # -- plumbing ---------------------------------------------------------

    def log_message(self, fmt, *args):
        # One line per request on stdout, where `docker logs` picks it up.
        headers = getattr(self, "headers", None)  # unset on malformed requests
        user = headers.get(USER_HEADER, "-") if headers else "-"
        print(f"{self.address_string()} {user} {fmt % args}", flush=True)

    def log_error(self, fmt, *args):
        # Keep stdout at exactly one line per request; details go to stderr.
        print(fmt % args, file=sys.stderr, flush=True)

    def send(self, status, body, content_type="text/plain; charset=utf-8", headers=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def route(self):
        """Return the path relative to the base URL, or None if outside it."""
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        base = base_url()
        if not path.startswith(base):
            return None
        return path[len(base) :]

    def header(self, name):
        # http.server decodes header bytes as Latin-1; the hub sends UTF-8.
        value = self.headers.get(name)
        if value is None:
            return None
        try:
            return value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return value

    def current_user(self):
        return self.header(USER_HEADER) or os.environ.get("SERVICEHUB_USER") or "anonymous"

    # -- methods ----------------------------------------------------------

    def do_GET(self):
        rel = self.route()
        if rel not in NOT_ACTIVITY:
            touch()
        if rel is None:
            path = self.path.split("?", 1)[0]
            if path + "/" == base_url():
                # "/notebook" -> "/notebook/" so relative links keep working.
                self.send(HTTPStatus.MOVED_PERMANENTLY, "", headers={"Location": base_url()})
            else:
                self.send(HTTPStatus.NOT_FOUND, "not found\n")
        elif rel == "healthz":
            self.send(HTTPStatus.OK, "ok")
        elif rel == "activity":
            body = json.dumps({"last_activity": activity["last"]}) + "\n"
            self.send(HTTPStatus.OK, body, "application/json")
        elif rel == "ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.websocket()
        elif rel == "whoami":
            self.whoami()
        elif rel.startswith("data/"):
            self.get_data(rel[len("data/") :])
        else:
            self.index()

    do_HEAD = do_GET

    def do_PUT(self):
        rel = self.route()
        if rel is not None and rel.startswith("data/"):
            touch()
            self.put_data(rel[len("data/") :])
        elif rel == "activity":
            self.put_activity()
        else:
            self.send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "method not allowed\n",
                headers={"Allow": "GET, HEAD"},
            )

    def do_POST(self):
        rel = self.route()
        if rel == "burn":
            touch()
            self.start_burn()
        else:
            self.send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "method not allowed\n",
                headers={"Allow": "GET, HEAD"},
            )

    # -- endpoints --------------------------------------------------------

    def index(self):
        user = html.escape(self.current_user())
        base = html.escape(base_url())
        page = (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            "<title>whoami</title></head><body>\n"
            f"<h1>Hello, {user}</h1>\n"
            f'<p id="whoami">{user}</p>\n'
            f'<p><a href="{base}whoami">whoami (JSON)</a></p>\n'
            "</body></html>\n"
        )
        self.send(HTTPStatus.OK, page, "text/html; charset=utf-8")

    def whoami(self):
        groups = self.header(GROUPS_HEADER)
        info = {
            "header_user": self.header(USER_HEADER),
            "header_groups": groups,
            "groups": [g.strip() for g in groups.split(",") if g.strip()] if groups else [],
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("SERVICEHUB_")},
            "path": self.path,
            "hostname": socket.gethostname(),
            "header_names": sorted(self.headers.keys()),
            # Every header as received, duplicates included: what the hub let through.
            "headers": [[k, v] for k, v in self.headers.items()],
            # Headers a CGI/WSGI-style app would read as the identity headers: must stay empty.
            "alias_headers": sorted(
                k
                for k in self.headers
                if re.sub(r"[^A-Z0-9]", "_", k.upper()) in IDENTITY_VARS
                and k.lower() not in (USER_HEADER.lower(), GROUPS_HEADER.lower())
            ),
        }
        self.send(HTTPStatus.OK, json.dumps(info, indent=2) + "\n", "application/json")

    def data_path(self, name):
        """The file for ``name`` in the data dir, or None after answering the error."""
        if not valid_name(name):
            return self.send(HTTPStatus.BAD_REQUEST, "invalid name\n")
        directory = data_dir()
        if directory is None:
            return self.send(HTTPStatus.SERVICE_UNAVAILABLE, "no data dir\n")
        return os.path.join(directory, name)

    def get_data(self, name):
        path = self.data_path(name)
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                body = fh.read()
        except (FileNotFoundError, IsADirectoryError):
            return self.send(HTTPStatus.NOT_FOUND, "not found\n")
        self.send(HTTPStatus.OK, body, "application/octet-stream")

    def put_data(self, name):
        path = self.data_path(name)
        if path is None:
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.send(HTTPStatus.LENGTH_REQUIRED, "content-length required\n")
        if length < 0 or length > MAX_DATA_BYTES:
            return self.send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large\n")
        body = self.rfile.read(length)
        target = path
        existed = os.path.exists(target)
        # Write then rename, so a reader never sees a half-written file.
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".put-")
        except OSError as exc:
            return self.send(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot write: {exc.strerror}\n")
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would surprise other readers
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
        status = HTTPStatus.OK if existed else HTTPStatus.CREATED
        self.send(status, f"stored {len(body)} bytes\n")

    def start_burn(self):
        query = self.path.partition("?")[2]
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        try:
            seconds = min(float(params.get("seconds", "60")), MAX_BURN_SECONDS)
        except ValueError:
            return self.send(HTTPStatus.BAD_REQUEST, "seconds must be a number\n")
        with lock:
            running = burn["until"] > time.time()
            burn["until"] = time.time() + seconds
        if not running:
            threading.Thread(target=burn_cpu, daemon=True).start()
        self.send(HTTPStatus.ACCEPTED, f"burning one core for {seconds:g} s\n")

    def put_activity(self):
        # Test knob: report this time from now on (the hub must never believe a future one).
        try:
            length = int(self.headers.get("Content-Length", ""))
            value = json.loads(self.rfile.read(min(length, 4096)))["last_activity"]
            value = float(value)
        except (ValueError, KeyError, TypeError):
            return self.send(HTTPStatus.BAD_REQUEST, 'send {"last_activity": <unix time>}\n')
        with lock:
            activity["last"] = value
        self.send(HTTPStatus.OK, "ok\n")

    def websocket(self):
        """An echo websocket (RFC 6455, standard library only): every message comes back.
        With ``?ping=SECONDS`` the app also pings the client that often, as many app servers
        do to keep a connection open: traffic with nobody there."""
        key = self.headers.get("Sec-WebSocket-Key", "")
        digest = hashlib.sha1((key + WS_GUID).encode(), usedforsecurity=False).digest()  # RFC 6455
        accept = base64.b64encode(digest).decode()
        self.protocol_version = "HTTP/1.1"
        self.send_response(HTTPStatus.SWITCHING_PROTOCOLS)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.close_connection = True
        self.connection.settimeout(None)  # an idle websocket stays open
        sending = threading.Lock()  # the pinger and the echo write frames to one socket
        closed = threading.Event()

        def send(opcode, data):
            with sending:
                ws_send(self.wfile, opcode, data)

        every = ping_interval(self.path)
        if every:
            threading.Thread(target=pinger, args=(send, closed, every), daemon=True).start()
        try:
            self.echo(send)
        finally:
            closed.set()

    def echo(self, send):
        message, kind = b"", 0
        while True:
            frame = ws_recv(self.rfile)
            if frame is None:
                return
            opcode, fin, data = frame
            if opcode == 0x8:  # close: answer and end
                send(0x8, data[:2])
                return
            if opcode == 0x9:  # ping
                send(0xA, data)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode in (0x1, 0x2):
                message, kind = data, opcode
            elif opcode == 0x0:
                message += data
            if fin and kind:
                touch()
                send(kind, message)
                message, kind = b"", 0


def ping_interval(path):
    """The ``ping`` query parameter in seconds (0.5 to 3600), or None."""
    query = path.partition("?")[2]
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "ping":
            try:
                seconds = float(value)
            except ValueError:
                return None
            return seconds if 0.5 <= seconds <= 3600 else None
    return None


def pinger(send, closed, every):
    while not closed.wait(every):
        try:
            send(0x9, b"ping")
        except OSError:  # the client went
            return


def on_signal(signum, _frame):
    # Raising unwinds serve_forever() (or the startup sleep) right away,
    # so `docker stop` does not have to wait for its SIGKILL timeout.
    raise SystemExit(0)


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if os.environ.get("CRASH_ON_START") == "1":
        print("whoami: CRASH_ON_START=1, exiting with status 3", file=sys.stderr, flush=True)
        return 3

    try:
        delay = float(os.environ.get("STARTUP_DELAY", "0") or 0)
        port = int(os.environ.get("SERVICEHUB_PORT", "8000") or 8000)
    except ValueError as exc:
        print(f"whoami: bad STARTUP_DELAY or SERVICEHUB_PORT: {exc}", file=sys.stderr)
        return 2
    if delay > 0:
        print(f"whoami: delaying startup by {delay:g}s", flush=True)
        time.sleep(delay)

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    print(f"whoami: listening on 0.0.0.0:{port}, base url {base_url()}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        print("whoami: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
