"""What the wizard writes, and how it avoids overwriting what someone else wrote.

Three files, next to each other as ``ansible-playbook site.yml -i inventory`` expects them:
``inventory``, ``group_vars/hub/main.yml`` and ``group_vars/hub/vault.yml`` (encrypted). The
record ``.servicehub-configure.yml`` beside them keeps the sha256 of each file as the wizard
last wrote it: a file whose content no longer has that hash was edited by hand (or written by
something else), and is replaced only after its diff was shown and the operator agreed.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tempfile
import textwrap
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from .answers import COMMENTS, Answers

INVENTORY = Path("inventory")
MAIN = Path("group_vars/hub/main.yml")
VAULT = Path("group_vars/hub/vault.yml")
RECORD = Path(".servicehub-configure.yml")
HEADER = """\
---
# Written by servicehub-configure (docs/configure.md). Run it again to change an answer: it
# shows these values as defaults and rewrites only what changed. Only what differs from the
# roles' defaults is here; docs/variables.md lists every variable. Secrets are in vault.yml.
"""
KEPT_HEADER = "\n# Not asked by servicehub-configure: kept as they were.\n"


class _Dumper(yaml.SafeDumper):
    """Block sequences indented under their key, as yamllint's default wants them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False, width=100)


def render_main(variables: dict[str, Any], uris: dict[str, str]) -> str:
    parts = [HEADER]
    kept = False
    for name, value in variables.items():
        comment = COMMENTS.get(name)
        if comment is None and not kept:
            parts.append(KEPT_HEADER)
            kept = True
        if comment is not None:
            text = comment.format(**uris)
            parts.append(
                "\n" + textwrap.fill(text, 98, initial_indent="# ", subsequent_indent="# ")
            )
            parts.append("\n")
        parts.append(_dump({name: value}))
    return "".join(parts)


def render_inventory(address: str, ansible_user: str) -> str:
    user = f" ansible_user={ansible_user}" if ansible_user else ""
    return (
        "# Written by servicehub-configure (docs/configure.md): the hub, reached by SSH.\n"
        "# Its variables are in group_vars/hub/ next to this file.\n"
        "[hub]\n"
        f"{address}{user}\n"
    )


def render_vault_plain(secrets: dict[str, str]) -> str:
    return "---\n" + yaml.safe_dump(secrets, default_flow_style=False, sort_keys=True)


def parse_inventory(text: str) -> tuple[str, str]:
    """The first host of group ``hub`` and its ansible_user, from an INI inventory."""
    group = None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if m := re.match(r"^\[([^\]]+)\]$", line):
            group = m.group(1)
            continue
        if group == "hub":
            address, *pairs = line.split()
            settings = dict(p.split("=", 1) for p in pairs if "=" in p)
            return address, settings.get("ansible_user", "")
    return "", ""


def load_answers_from(directory: Path, roles: Any) -> Answers | None:
    """The answers in the files of an earlier run (hand edits included); None: no files."""
    from .answers import from_variables

    main = directory / MAIN
    if not main.is_file():
        return None
    variables = yaml.safe_load(main.read_text(encoding="utf-8")) or {}
    if not isinstance(variables, dict):
        raise ValueError(f"{main} is not a mapping of variables")
    answers = from_variables(variables, roles)
    inventory = directory / INVENTORY
    if inventory.is_file():
        address, user = parse_inventory(inventory.read_text(encoding="utf-8"))
        answers.hub.address = "" if address == answers.hub.server_name else address
        answers.hub.ansible_user = user
    return answers


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Status(Enum):
    NEW = "new"
    SAME = "unchanged"
    UPDATE = "updated"
    HAND_EDITED = "edited by hand"
    KEPT = "kept as edited by hand"


@dataclass
class Planned:
    path: Path  # relative to the output directory
    text: str
    status: Status
    old: str = ""
    mode: int = 0o644

    @property
    def secret(self) -> bool:
        return self.path == VAULT


class Output:
    """The output directory and the record of what the wizard wrote there last."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def read(self, path: Path) -> str | None:
        full = self.directory / path
        return full.read_text(encoding="utf-8") if full.is_file() else None

    def record(self) -> dict[str, str]:
        text = self.read(RECORD)
        data = yaml.safe_load(text) if text else None
        files = data.get("files") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}

    def plan(
        self, path: Path, text: str, *, same: bool | None = None, mode: int = 0o644
    ) -> Planned:
        """What writing ``text`` to ``path`` means. ``same`` overrides the textual comparison
        (an encrypted file differs on every encryption: its callers compare the plaintext)."""
        old = self.read(path)
        if old is None:
            return Planned(path, text, Status.NEW, mode=mode)
        written_by_us = self.record().get(str(path)) == digest(old)
        unchanged = (old == text) if same is None else same
        if unchanged:
            return Planned(path, old, Status.SAME, old, mode)
        status = Status.UPDATE if written_by_us else Status.HAND_EDITED
        return Planned(path, text, status, old, mode)

    def write(self, planned: list[Planned]) -> None:
        for item in planned:
            if item.status not in (Status.SAME, Status.KEPT):
                write_atomic(self.directory / item.path, item.text, item.mode)
        files = self.record()
        for item in planned:
            if item.status is not Status.KEPT:  # still someone else's: ask again next time
                files[str(item.path)] = digest(item.text)
        record = (
            "---\n"
            "# servicehub-configure's record of the files it wrote last (sha256): a file with\n"
            "# another hash was edited by hand, and is not replaced without asking.\n"
            + yaml.safe_dump({"files": files}, sort_keys=True)
        )
        write_atomic(self.directory / RECORD, record, 0o644)


def diff(planned: Planned) -> str:
    """A unified diff of a planned file; a Vault file's is never shown (it is ciphertext)."""
    if planned.secret:
        return f"({planned.path} is encrypted: its content is not shown)\n"
    lines = difflib.unified_diff(
        planned.old.splitlines(keepends=True),
        planned.text.splitlines(keepends=True),
        fromfile=f"{planned.path} (now)",
        tofile=f"{planned.path} (new)",
    )
    return "".join(lines)


def write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
