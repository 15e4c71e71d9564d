#!/usr/bin/env python3
"""A scripted browser for the hub's end-to-end checks (standard library only).

It does what a person does: opens a hub URL, follows the redirects to the OpenID Connect
provider, fills in the login form, comes back with the session cookie, waits on the hub's wait
page (as its script would) and prints what the app finally answered, as JSON.

    hubclient.py --user alice --password alice-password --path /whoami [--header 'Name: value']
                 [--logout] [--ca FILE] [--save-cookies FILE]

Every redirect it followed is in the output ("redirects"), so the attack suite can replay the
login callback.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from html import unescape

HUB = "https://hub.test"


class StoppedAtCallback(Exception):
    """The provider sent the browser back to the hub's login callback, which was not followed."""


class RecordingRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, seen: list[str], stop_at_callback: bool = False) -> None:
        self.seen = seen
        self.stop_at_callback = stop_at_callback

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.seen.append(newurl)
        # The callback: back at the hub with the provider's authorization response (whatever
        # path apache_oidc_redirect_path gives it).
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(newurl).query)
        if self.stop_at_callback and newurl.startswith(HUB) and {"code", "state"} <= query.keys():
            raise StoppedAtCallback(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Browser:
    def __init__(
        self, ca: str | None, extra_headers: list[tuple[str, str]], stop_at_callback: bool = False
    ) -> None:
        context = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()  # noqa: S323
        self.jar = http.cookiejar.CookieJar()
        self.redirects: list[str] = []
        self.opener = urllib.request.build_opener(
            RecordingRedirects(self.redirects, stop_at_callback),
            urllib.request.HTTPCookieProcessor(self.jar),
            urllib.request.HTTPSHandler(context=context),
        )
        self.extra = extra_headers
        self.trail: list[str] = []

    def open(self, url: str, data: dict[str, str] | None = None, accept: str = "text/html"):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(url, data=body, headers={"Accept": accept})  # noqa: S310
        if url.startswith(HUB):
            for name, value in self.extra:  # forged headers go to the hub only
                request.add_header(name, value)
        try:
            resp = self.opener.open(request, timeout=30)
        except urllib.error.HTTPError as err:
            resp = err
        text = resp.read().decode("utf-8", "replace")
        self.trail.append(f"{resp.status} {resp.geturl()}")
        return resp, text


def form_action(text: str, base: str) -> str:
    match = re.search(r'<form[^>]*action="([^"]+)"', text)
    if not match:
        raise SystemExit(f"no form on the page:\n{text[:2000]}")
    return urllib.parse.urljoin(base, unescape(match.group(1)))


def hidden_fields(text: str) -> dict[str, str]:
    fields = {}
    for tag in re.findall(r"<input[^>]*>", text):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and 'type="hidden"' in tag:
            fields[unescape(name.group(1))] = unescape(value.group(1)) if value else ""
    return fields


def login(browser: Browser, path: str, user: str, password: str):
    resp, text = browser.open(HUB + path)
    if "/interaction/" in resp.geturl():
        resp, text = browser.open(
            form_action(text, resp.geturl()), {"login": user, "password": password}
        )
    return resp, text


def wait_for_app(browser: Browser, path: str, resp, text: str, timeout: float = 120):
    """The wait page's loop: poll the status API until ready, then load the page again."""
    deadline = time.monotonic() + timeout
    while resp.headers.get("X-Servicehub-Wait") == "1" and resp.status == 200:
        if time.monotonic() > deadline:
            raise SystemExit("the app never became ready")
        config = json.loads(
            re.search(r'id="servicehub-config">(.*?)</script>', text, re.S).group(1)
        )
        _, status_text = browser.open(
            HUB + config["status"] + "&since=-1", accept="application/json"
        )
        state = json.loads(status_text)["state"]
        if state in ("ready", "failed"):
            resp, text = browser.open(HUB + path)
        else:
            time.sleep(0.2)
    return resp, text


def save_cookies(browser: Browser, path: str | None) -> None:
    """The hub's cookies as one Cookie header value (for raw requests: hubraw --cookie-file)."""
    if path:
        host = urllib.parse.urlsplit(HUB).hostname or ""
        with open(path, "w", encoding="utf-8") as out:
            out.write(
                "; ".join(
                    f"{c.name}={c.value}" for c in browser.jar if c.domain.lstrip(".") == host
                )
            )


def main() -> None:
    global HUB
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", default=HUB, help="the hub's base URL (default %(default)s)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--path", default="/whoami")
    parser.add_argument(
        "--header", action="append", default=[], help="extra 'Name: value' to the hub"
    )
    parser.add_argument("--logout", action="store_true", help="log out afterwards, then retry")
    parser.add_argument("--ca", help="CA bundle to verify the hub's certificate with")
    parser.add_argument(
        "--save-cookies", help="write the hub's cookies (a Cookie header value) here"
    )
    parser.add_argument(
        "--stop-at-callback",
        action="store_true",
        help="log in but do not follow the provider's redirect back to the hub: print it",
    )
    parser.add_argument(
        "--repeat", type=int, default=0, help="then keep using the app: this many more requests..."
    )
    parser.add_argument("--every", type=float, default=5.0, help="...this many seconds apart")
    args = parser.parse_args()
    HUB = args.hub.rstrip("/")
    extra = [tuple(h.split(": ", 1)) for h in args.header]
    browser = Browser(args.ca, extra, args.stop_at_callback)  # type: ignore[arg-type]
    try:
        resp, text = login(browser, args.path, args.user, args.password)
    except StoppedAtCallback as stop:
        save_cookies(browser, args.save_cookies)
        # mod_auth_openidc binds the state to the browser's User-Agent: a replay needs it too.
        agent = dict(browser.opener.addheaders)["User-agent"]
        json.dump(
            {"callback": str(stop), "user_agent": agent, "redirects": browser.redirects}, sys.stdout
        )
        return
    resp, text = wait_for_app(browser, args.path, resp, text)
    result = {
        "status": resp.status,
        "url": resp.geturl(),
        "body": text,
        "cookies": [
            {
                "name": c.name,
                "secure": c.secure,
                "domain": c.domain,
                "httponly": c.has_nonstandard_attr("HttpOnly"),
                "samesite": c.get_nonstandard_attr("SameSite"),
            }
            for c in browser.jar
        ],
    }
    save_cookies(browser, args.save_cookies)
    for _ in range(args.repeat):  # a person at work: a request now and then
        time.sleep(args.every)
        again, _ = browser.open(HUB + args.path)
        result["repeat_status"] = again.status
    if args.logout:
        out, page = browser.open(HUB + "/logout")
        if "/session/end" in out.geturl() and "<form" in page:  # the provider asks to confirm
            out, page = browser.open(
                form_action(page, out.geturl()), {**hidden_fields(page), "logout": "yes"}
            )
        after, _ = browser.open(HUB + args.path)
        result["after_logout_url"] = after.geturl()
    result["trail"] = browser.trail
    result["redirects"] = browser.redirects
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
