"""Ansible Vault files, written and read with ansible-core's own ``VaultLib``.

The wizard runs where Ansible runs (the operator's machine), so ansible-core is there; it is
imported only when a Vault file is touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PASSWORD_ENV = "SERVICEHUB_VAULT_PASSWORD"  # noqa: S105 (a variable name)


class VaultError(ValueError):
    """No usable password, or a Vault file that this password does not open."""


def _vault(password: str) -> Any:
    try:
        from ansible.constants import DEFAULT_VAULT_ID_MATCH  # type: ignore[import-untyped]
        from ansible.parsing.vault import (  # type: ignore[import-untyped]
            VaultLib,
            VaultSecret,
        )
    except ImportError as exc:  # pragma: no cover - ansible-core is a dev dependency
        raise VaultError(f"ansible-core is needed to write the Vault file: {exc}") from None
    if not password:
        raise VaultError("the Vault password must not be empty")
    return VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password.encode("utf-8")))])


def is_encrypted(text: str) -> bool:
    return text.startswith("$ANSIBLE_VAULT;")


def encrypt(plaintext: str, password: str) -> str:
    data = _vault(password).encrypt(plaintext.encode("utf-8"))
    return bytes(data).decode("ascii")


def decrypt(ciphertext: str, password: str) -> str:
    from ansible.errors import AnsibleError  # type: ignore[import-untyped]

    try:
        data = _vault(password).decrypt(ciphertext.encode("ascii"))
    except AnsibleError:
        raise VaultError("this Vault password does not open the existing Vault file") from None
    return bytes(data).decode("utf-8")


def password_from(file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """A password for automation: the first line of a file (as ansible's
    --vault-password-file reads it), else $SERVICEHUB_VAULT_PASSWORD; None: neither."""
    environ = dict(os.environ) if environ is None else environ
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise VaultError(
                f"cannot read the Vault password file {file}: {exc.strerror}"
            ) from None
        password = text.splitlines()[0].strip() if text.strip() else ""
        if not password:
            raise VaultError(f"the Vault password file {file} is empty")
        return password
    return environ.get(PASSWORD_ENV) or None
