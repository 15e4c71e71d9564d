"""The HTML the daemon shows people: the wait page, the error page with a retry, refusals.

Every value is HTML-escaped or embedded as JSON with '<' escaped, so nothing from a request
(user id, path) can become markup or script.
"""

from __future__ import annotations

import json
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

_LAYOUT = Template(files("servicehub").joinpath("templates/layout.html").read_text("utf-8"))
_WAIT_SCRIPT = files("servicehub").joinpath("templates/wait.js").read_text("utf-8")


def _json_for_script(data: Any) -> str:
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def layout(title: str, body: str, script: str = "") -> str:
    return _LAYOUT.substitute(title=escape(title), body=body, script=script)


def wait_page(
    app: str, target: str, status_url: str, retry_url: str, status: dict[str, Any]
) -> str:
    config = {
        "app": app,
        "target": target,
        "status": status_url,
        "retry": retry_url,
        "initial": status,
    }
    body = f"""
<h1>Starting {escape(app)} for you</h1>
<p id="message">{escape(str(status.get("message", "")))}</p>
<progress id="progress" max="1" value="{float(status.get("progress", 0)):.2f}"></progress>
<p class="small"><span id="elapsed">0</span> s</p>
<div id="failed" hidden>
  <p class="error" id="reason"></p>
  {retry_form(app, target, retry_url)}
</div>
<noscript><p>This page needs JavaScript to move on: reload it in a few seconds.</p></noscript>
<script type="application/json" id="servicehub-config">{_json_for_script(config)}</script>"""
    return layout(f"Starting {app}", body, f"<script>{_WAIT_SCRIPT}</script>")


def retry_form(app: str, target: str, retry_url: str) -> str:
    return f"""<form method="post" action="{escape(retry_url)}">
    <input type="hidden" name="app" value="{escape(app)}">
    <input type="hidden" name="next" value="{escape(target)}">
    <button type="submit" id="retry">Try again</button>
  </form>"""


def error_page(app: str, reason: str, target: str, retry_url: str) -> str:
    body = f"""
<h1>{escape(app)} could not start</h1>
<p class="error" id="reason">{escape(reason)}</p>
<p>The hub's operators can find the details in its log.</p>
{retry_form(app, target, retry_url)}"""
    return layout(f"{app} could not start", body)


def refusal_page(title: str, reason: str) -> str:
    return layout(title, f'<h1>{escape(title)}</h1>\n<p id="reason">{escape(reason)}</p>')
