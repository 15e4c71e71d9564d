"""servicehub-configure, driven through a pseudo-terminal against the real test provider.

The provider is dev/oidc-provider (node oidc-provider, `make oidc-provider` installs it) started
as a process on loopback. Good answers give files that site.yml's real preflight accepts (run
with Ansible in check mode, ending right after the preflight, as tests/integration/test_preflight.py
does); each kind of wrong answer is refused naming its variable and asked again; the client
secret appears only inside the encrypted Vault file, never in the transcript.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pexpect
import pytest
import yaml

from servicehub.configure.vault import decrypt
from tests.harness import free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = ROOT / "dev" / "oidc-provider"
BIN = Path(sys.executable).parent
SECRET = "Wizard-client-secret-7f3a91c2"
VAULT_PASSWORD = "wizard-vault-password-51d0"
APP_IMAGE = "servicehub-example/whoami:latest"
# Every question ends with its default in brackets, or [y/N] / [Y/n], then ": ".
ANY_PROMPT = r"\[[^\]\n]*\]: $|Vault password of [^\n]*: $"


@pytest.fixture(scope="module")
def provider():
    """The test provider on a free loopback port; yields its issuer."""
    if not (PROVIDER / "node_modules").is_dir():
        pytest.fail("dev/oidc-provider/node_modules missing: run make oidc-provider")
    issuer = f"http://127.0.0.1:{free_port()}"
    clients = [{"client_id": "servicehub", "client_secret": SECRET, "redirect_uris": []}]
    env = {**os.environ, "OIDC_ISSUER": issuer, "OIDC_LISTEN": "127.0.0.1",
           "OIDC_CLIENTS": json.dumps(clients)}  # fmt: skip
    proc = subprocess.Popen(
        ["node", "server.mjs"], cwd=PROVIDER, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_for(up, 30, "the test provider")
        yield issuer
    finally:
        proc.terminate()
        proc.wait(10)


def spawn(directory: Path, *args: str, env: dict[str, str] | None = None):
    transcript = io.StringIO()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERVICEHUB_")}
    env = {**base, **(env or {})}
    child = pexpect.spawn(
        str(BIN / "servicehub-configure"), ["--dir", str(directory), *args],
        encoding="utf-8", timeout=30, env=env, dimensions=(50, 200),
    )  # fmt: skip
    child.logfile_read = transcript
    return child, transcript


def answer(child, prompt: str, text: str) -> None:
    child.expect(prompt)
    child.sendline(text)


def refused(child, message: str, prompt: str, text: str) -> None:
    """The last answer is refused with ``message``, then the same question comes again."""
    child.expect(message)
    child.expect("Please answer again")
    answer(child, prompt, text)


def run_preflight(directory: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """site.yml's own play, ended right after its preflight, against this machine (check
    mode), with the wizard's inventory, group_vars and Vault file."""
    site = yaml.safe_load((ROOT / "site.yml").read_text())
    hub = next(p for p in site if p["name"] == "Servicehub hub")
    play = {**hub, "become": False, "tasks": []}
    play["pre_tasks"] = [
        *hub["pre_tasks"],
        {"name": "Preflight passed", "ansible.builtin.meta": "end_play"},
    ]
    playbook = tmp_path / "play" / "preflight.yml"
    playbook.parent.mkdir()
    playbook.write_text(yaml.safe_dump([play]))
    password = tmp_path / "vault-password"
    password.write_text(VAULT_PASSWORD + "\n")
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(directory / "inventory"), "-c", "local",
         "--check", str(playbook), "--vault-password-file", str(password),
         "-e", "ansible_python_interpreter=/usr/bin/python3"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip


def first_run(child, issuer: str) -> None:
    # The hub: an unresolvable name is refused, saying so.
    answer(child, r"The hub's DNS name.*: $", "nohub.invalid")
    refused(child, r"apache_oidc_server_name: nohub.invalid does not resolve",
            r"The hub's DNS name.*: $", "localhost")  # fmt: skip
    child.expect(r"localhost resolves to [0-9a-f.:, ]+: that must be the hub")
    answer(child, r"over SSH.*: $", "")
    answer(child, r"SSH user there.*: $", "")
    # The login: a wrong discovery URL is refused, then the provider's document is checked.
    answer(child, r"issuer or discovery URL.*: $", f"{issuer}/no-such-realm")
    refused(child, r"apache_oidc_provider_metadata_url: .*answered HTTP 404",
            r"issuer or discovery URL.*: $", issuer)  # fmt: skip
    child.expect(f"Issuer: {issuer}")
    child.expect(r"redirect URI: +https://localhost/oidc/redirect")
    child.expect(r"post-logout redirect URI: https://localhost/")
    answer(child, r"client id.*: $", "servicehub")
    answer(child, r"client secret.*: $", SECRET)
    # A claim the provider does not offer is refused, naming the ones it offers.
    answer(child, r"User id claim.*: $", "employee_number")
    refused(child, r"apache_oidc_user_claim: the provider does not offer the claim "
            r"'employee_number'; it offers sub, email", r"User id claim.*: $", "email")  # fmt: skip
    answer(child, r"Groups claim.*\[groups\]: $", "")
    answer(child, r"Rules.*: $", "groups:lab")
    # The groups claim's scope is offered with the defaults.
    answer(child, r"Scopes to ask for at login \[openid email profile groups\]: $", "")
    # The apps: an image name the daemon refuses is refused here, naming the key.
    answer(child, r"App name.*: $", "whoami")
    answer(child, r"Docker image.*: $", "Not An Image!")
    refused(child, r"servicehub_apps.whoami.image: invalid value 'Not An Image!'",
            r"Docker image.*: $", APP_IMAGE)  # fmt: skip
    answer(child, r"Pull .* \[Y/n\]: $", "n")
    answer(child, r"Port .*\[8000\]: $", "")
    answer(child, r"Path prefix .*\[/\]: $", "")
    answer(child, r"Memory limit .*\[1g\]: $", "256m")
    answer(child, r"CPU limit .*\[1\]: $", "0.5")
    answer(child, r"Persistent directory .*\[/data\]: $", "")
    answer(child, r"Users \[none\]: $", "")
    answer(child, r"Groups \[none\]: $", "")
    answer(child, r"Add another app\? \[y/N\]: $", "")
    answer(child, r"Certificate \(production/staging/self-signed/acme\).*: $", "self-signed")


def test_good_answers_give_files_the_preflight_accepts(provider, tmp_path):
    out = tmp_path / "hub"
    child, transcript = spawn(out)
    first_run(child, provider)
    answer(child, r"Vault password: $", VAULT_PASSWORD)
    answer(child, r"Again, to confirm: $", VAULT_PASSWORD)
    child.expect(r"group_vars/hub/vault.yml: new")
    child.expect(r"ansible-playbook site.yml -i \S+/inventory --ask-vault-pass")
    answer(child, r"Run it now\? \[y/N\]: $", "n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, transcript.getvalue()[-3000:]

    # The secret: only in the encrypted Vault file; not in the transcript, nor the password.
    text = transcript.getvalue()
    assert SECRET not in text and VAULT_PASSWORD not in text
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.relative_to(out).as_posix() for p in written} >= {
        "inventory", "group_vars/hub/main.yml", "group_vars/hub/vault.yml",
    }  # fmt: skip
    for path in written:
        assert SECRET not in path.read_text(), path
    vault = out / "group_vars" / "hub" / "vault.yml"
    assert vault.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(decrypt(vault.read_text(), VAULT_PASSWORD)) == {
        "vault_apache_oidc_client_secret": SECRET
    }
    main = yaml.safe_load((out / "group_vars" / "hub" / "main.yml").read_text())
    assert main["servicehub_identity_issuer"] == provider
    assert main["apache_oidc_user_claim"] == "email"
    assert main["apache_oidc_require_claims"] == ["groups:lab"]
    assert main["servicehub_apps"]["whoami"]["image"] == APP_IMAGE
    assert "certbot_mode" not in main  # self_signed is the role's default

    result = run_preflight(out, tmp_path)
    assert result.returncode == 0 and "Preflight passed" in result.stdout, (
        result.stdout[-3000:] + result.stderr[-2000:]
    )

    # Again, pressing Enter throughout: the current answers are the defaults, nothing changes.
    before = {p: p.read_bytes() for p in written}
    child, transcript = spawn(out)
    child.expect(r"Vault password of group_vars/hub/vault.yml: $")
    child.sendline(VAULT_PASSWORD)
    while child.expect([r"Run it now\? \[y/N\]: $", ANY_PROMPT]) == 1:
        child.sendline("")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, transcript.getvalue()[-3000:]
    for name in ("inventory", "group_vars/hub/main.yml", "group_vars/hub/vault.yml"):
        assert f"{name}: unchanged" in transcript.getvalue()
    assert {p: p.read_bytes() for p in written} == before
    assert SECRET not in transcript.getvalue()


def test_a_hand_edited_file_is_shown_and_kept_unless_confirmed(provider, tmp_path):
    out = tmp_path / "hub"
    answers = tmp_path / "answers.yml"
    answers.write_text(yaml.safe_dump({
        "hub": {"server_name": "localhost"},
        "login": {"provider": provider, "user_claim": "email"},
        "apps": {"whoami": {"image": APP_IMAGE, "pull": False}},
        "certificate": {"mode": "self-signed"},
    }))  # fmt: skip
    env = {"SERVICEHUB_VAULT_PASSWORD": VAULT_PASSWORD, "SERVICEHUB_CLIENT_SECRET": SECRET}
    run = [str(BIN / "servicehub-configure"), "--dir", str(out), "--answers", str(answers)]
    first = subprocess.run(run, env={**os.environ, **env}, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    main = out / "group_vars" / "hub" / "main.yml"
    main.write_text(
        main.read_text().replace("apache_oidc_user_claim: email", "apache_oidc_user_claim: sub")
    )
    edited = main.read_text()

    # Interactive: the diff is shown, the answer is no, the file stays as edited.
    child, transcript = spawn(out, env={"SERVICEHUB_VAULT_PASSWORD": VAULT_PASSWORD})
    answer(child, r"The hub's DNS name.*: $", "")
    while child.expect([r"Replace group_vars/hub/main.yml.*\[y/N\]: $", ANY_PROMPT]) == 1:
        child.sendline("" if "User id claim" not in child.before + child.after else "email")
    assert "+apache_oidc_user_claim: email" in transcript.getvalue()
    assert "-apache_oidc_user_claim: sub" in transcript.getvalue()
    child.sendline("n")
    answer(child, r"Run it now\? \[y/N\]: $", "n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert main.read_text() == edited

    # Non-interactive: refused with the diff, unless --overwrite.
    again = subprocess.run(run, env={**os.environ, **env}, capture_output=True, text=True)
    assert again.returncode == 1 and "edited by hand" in again.stdout
    assert main.read_text() == edited
    forced = subprocess.run([*run, "--overwrite"], env={**os.environ, **env},
                            capture_output=True, text=True)  # fmt: skip
    assert forced.returncode == 0, forced.stdout
    assert "apache_oidc_user_claim: email" in main.read_text()


def test_non_interactive_answers_get_the_same_checks(provider, tmp_path):
    answers = tmp_path / "answers.yml"
    answers.write_text(yaml.safe_dump({
        "hub": {"server_name": "nohub.invalid"},
        "login": {"provider": provider, "user_claim": "employee_number", "groups_claim": "groups"},
        "apps": {"whoami": {"image": "Not An Image!"}},
        "certificate": {"mode": "production", "email": "not-an-address"},
    }))  # fmt: skip
    result = subprocess.run(
        [str(BIN / "servicehub-configure"), "--dir", str(tmp_path / "hub"), "--answers",
         str(answers)],
        env={**os.environ, "SERVICEHUB_VAULT_PASSWORD": VAULT_PASSWORD,
             "SERVICEHUB_CLIENT_SECRET": SECRET},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    for key in ("apache_oidc_server_name: nohub.invalid does not resolve",
                "apache_oidc_user_claim: the provider does not offer",
                "servicehub_apps.whoami.image", "certbot_email"):  # fmt: skip
        assert key in result.stdout, result.stdout
    assert not (tmp_path / "hub").exists()
    assert SECRET not in result.stdout + result.stderr
