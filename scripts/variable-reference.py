#!/usr/bin/env python3
"""Write docs/variables.md from every role's meta/argument_specs.yml (the one source).

Usage: scripts/variable-reference.py [--check]   (--check: exit 1 if the file is out of date)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "variables.md"
ROLE_ORDER = ["docker", "traefik", "servicehub", "certbot", "apache_oidc"]


def cell(value: object) -> str:
    text = " ".join(value) if isinstance(value, list) else str(value)
    return text.replace("|", "\\|").replace("\n", " ").strip()


def render() -> str:
    out = ["# Variables", "",
           "Every variable of every role, generated from `roles/*/meta/argument_specs.yml` by",
           "`scripts/variable-reference.py` (a test fails when this file is out of date). Ansible",
           "validates these types and choices before a role runs.", ""]
    roles = sorted((ROOT / "roles").glob("*/meta/argument_specs.yml"),
                   key=lambda p: (ROLE_ORDER.index(p.parts[-3]) if p.parts[-3] in ROLE_ORDER else 99,
                                  p.parts[-3]))
    for spec_path in roles:
        role = spec_path.parts[-3]
        spec = yaml.safe_load(spec_path.read_text())["argument_specs"]["main"]
        out += [f"## {role}", "", cell(spec.get("short_description", "")), "",
                "| variable | type | required | default | description |", "|---|---|---|---|---|"]
        for name, opt in sorted(spec.get("options", {}).items()):
            default = opt.get("default", "")
            default = f"`{yaml.safe_dump(default, default_flow_style=True).strip()}`" \
                if default != "" else ""
            default = default.replace("\n...", "").replace("|", "\\|")
            desc = cell(opt.get("description", ""))
            if opt.get("choices"):
                desc += f" Choices: {', '.join(f'`{c}`' for c in opt['choices'])}."
            out.append(f"| `{name}` | {opt.get('type', 'str')} | "
                       f"{'yes' if opt.get('required') else ''} | {default} | {desc} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run scripts/variable-reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
