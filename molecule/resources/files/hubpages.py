#!/usr/bin/env python3
"""The scripted browser (hubclient) kept open between steps, for the hub pages' checks.

Each call is one thing a person does in the same browser: log in, load a page, press a button
of a form on a page, follow a link on a page, or send a forged POST. The cookies (the hub's and
the provider's) live in a file between calls, so a test can look at the host in between.

    hubpages --jar FILE login --user alice --password alice-password --path /_servicehub/
    hubpages --jar FILE get /_servicehub/api/apps
    hubpages --jar FILE click /_servicehub/ --button 'Stop whoami'    # aria-label or id
    hubpages --jar FILE follow /_servicehub/ --link 'Open whoami'
    hubpages --jar FILE post /_servicehub/stop --field app=whoami --header 'Origin: https://x'
    hubpages --jar FILE cookies FILE2    # the hub's cookies as a Cookie header value

Every command prints {"status", "url", "body", "trail"} as JSON; the hub pages' buttons are
plain forms, so pressing one is submitting its fields (its hidden CSRF token included) to its
action, as a browser without JavaScript does.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import pickle
import re
import sys
import urllib.parse
from html import unescape
from pathlib import Path


def _hubclient():
    loader = importlib.machinery.SourceFileLoader("hubclient", "/usr/local/bin/hubclient")
    spec = importlib.util.spec_from_loader("hubclient", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


hubclient = _hubclient()


def find_form(text: str, button: str) -> tuple[str, dict[str, str]]:
    """The action and fields of the form whose button has this aria-label or id."""
    for form in re.findall(r"<form\b.*?</form>", text, re.S):
        if f'aria-label="{button}"' in form or f'id="{button}"' in form:
            action = re.search(r'action="([^"]+)"', form)
            if action is None:
                raise SystemExit(f"form of {button!r} has no action")
            return unescape(action.group(1)), hubclient.hidden_fields(form)
    raise SystemExit(f"no button {button!r} on the page:\n{text[:4000]}")


def find_link(text: str, label: str) -> str:
    for tag in re.findall(r"<a\b[^>]*>", text):
        if f'aria-label="{label}"' in tag:
            href = re.search(r'href="([^"]+)"', tag)
            if href:
                return unescape(href.group(1))
    raise SystemExit(f"no link {label!r} on the page:\n{text[:4000]}")


def hub_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def arrived(browser, resp, text: str):
    """Where the browser ends: through the wait page (as its script does) to the app."""
    if resp.geturl().startswith(hubclient.HUB):
        resp, text = hubclient.wait_for_app(browser, hub_path(resp.geturl()), resp, text)
    return resp, text


def end_provider_session(browser, resp, text: str):
    """The provider asks to confirm a logout: the person says yes."""
    if "/session/end" in resp.geturl() and "<form" in text:
        action = hubclient.form_action(text, resp.geturl())
        resp, text = browser.open(action, {**hubclient.hidden_fields(text), "logout": "yes"})
    return resp, text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jar", required=True, help="the browser's cookies between calls")
    parser.add_argument("--hub", default=hubclient.HUB)
    parser.add_argument("--ca", help="CA bundle to verify the hub's certificate with")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' to the hub")
    sub = parser.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login")
    login.add_argument("--user", required=True)
    login.add_argument("--password", required=True)
    login.add_argument("--path", required=True)
    get = sub.add_parser("get")
    get.add_argument("path")
    get.add_argument("--json", action="store_true", help="ask for JSON (the APIs)")
    click = sub.add_parser("click")
    click.add_argument("path", help="the page the button is on")
    click.add_argument("--button", required=True)
    follow = sub.add_parser("follow")
    follow.add_argument("path", help="the page the link is on")
    follow.add_argument("--link", required=True)
    post = sub.add_parser("post")
    post.add_argument("path")
    post.add_argument("--field", action="append", default=[], help="name=value")
    cookies = sub.add_parser("cookies")
    cookies.add_argument("output")
    args = parser.parse_args()

    hubclient.HUB = args.hub.rstrip("/")
    extra = [tuple(h.split(": ", 1)) for h in args.header]
    browser = hubclient.Browser(args.ca, extra)
    jar = Path(args.jar)
    if jar.exists():
        for cookie in pickle.loads(jar.read_bytes()):  # noqa: S301 - this tool's own file
            browser.jar.set_cookie(cookie)
    hub = hubclient.HUB

    if args.command == "login":
        resp, text = hubclient.login(browser, args.path, args.user, args.password)
        resp, text = arrived(browser, resp, text)
    elif args.command == "get":
        accept = "application/json" if args.json else "text/html"
        resp, text = browser.open(hub + args.path, accept=accept)
        resp, text = end_provider_session(browser, resp, text)
        if not args.json:  # a page: the wait page's script waits for the app, as here
            resp, text = arrived(browser, resp, text)
    elif args.command == "click":
        page, text = browser.open(hub + args.path)
        action, fields = find_form(text, args.button)
        resp, text = browser.open(urllib.parse.urljoin(page.geturl(), action), fields)
        resp, text = end_provider_session(browser, resp, text)
        resp, text = arrived(browser, resp, text)
    elif args.command == "follow":
        page, text = browser.open(hub + args.path)
        resp, text = browser.open(urllib.parse.urljoin(page.geturl(), find_link(text, args.link)))
        resp, text = arrived(browser, resp, text)
    elif args.command == "post":
        fields = dict(f.split("=", 1) for f in args.field)
        resp, text = browser.open(hub + args.path, fields)
    else:
        hubclient.save_cookies(browser, args.output)
        resp, text = None, ""

    jar.write_bytes(pickle.dumps(list(browser.jar)))
    jar.chmod(0o600)
    result = {"trail": browser.trail, "redirects": browser.redirects}
    if resp is not None:
        result |= {"status": resp.status, "url": resp.geturl(), "body": text}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
