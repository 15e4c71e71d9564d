"""servicehub-configure: ask (or read) the answers, check them, write the hub's files.

Exit status: 0 written (or nothing to change), 1 a hand-edited file was kept or the deploy
failed, 2 answers refused (every refused answer is printed, naming its variable), 130 aborted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .answers import (
    VAULT_SECRET_VAR,
    AnswerError,
    Answers,
    Checks,
    Resolver,
    apply_answers,
    check_all,
    new_answers,
    resolve,
    to_variables,
)
from .discovery import (
    DiscoveryError,
    Fetcher,
    Provider,
    discover,
    expected_issuer,
    fetch,
    metadata_url_for,
)
from .files import (
    INVENTORY,
    MAIN,
    VAULT,
    Output,
    Planned,
    Status,
    diff,
    load_answers_from,
    render_inventory,
    render_main,
    render_vault_plain,
)
from .prompt import Aborted, Prompter
from .roles import CHECKOUT, RoleFiles
from .vault import VaultError, decrypt, encrypt, is_encrypted, password_from
from .wizard import Wizard

SECRET_ENV = "SERVICEHUB_CLIENT_SECRET"  # noqa: S105 (a variable name)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="servicehub-configure",
        description=(
            "Configure a hub by answering questions: writes inventory, group_vars/hub/main.yml "
            "and the encrypted group_vars/hub/vault.yml, then prints the deploy command. "
            "Without --answers it asks on the terminal; see docs/configure.md."
        ),
        epilog="Exit status: 0 done, 1 a file kept or the deploy failed, 2 answers refused.",
    )
    p.add_argument("--dir", type=Path, default=None, help="where to write (default: the checkout)")
    p.add_argument("--answers", type=Path, help="YAML answers file: no questions asked")
    p.add_argument(
        "--non-interactive", action="store_true", help="ask nothing: answers, flags, files"
    )
    flags = p.add_argument_group("answers as flags (over --answers and the current files)")
    flags.add_argument("--server-name", help="the hub's DNS name")
    flags.add_argument("--provider", help="the provider's issuer or discovery URL")
    flags.add_argument("--client-id")
    flags.add_argument("--email", help="ACME contact e-mail")
    flags.add_argument("--certificate", choices=["production", "staging", "self-signed", "acme"])
    secrets = p.add_argument_group("secrets (never flags with the value itself)")
    secrets.add_argument(
        "--client-secret-file", type=Path, help=f"file holding the client secret (or ${SECRET_ENV})"
    )
    secrets.add_argument(
        "--vault-password-file",
        type=Path,
        help="file holding the Vault password (or $SERVICEHUB_VAULT_PASSWORD)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="skip the live checks (discovery document, DNS); everything else is checked",
    )
    p.add_argument("--overwrite", action="store_true", help="replace hand-edited files")
    p.add_argument("--deploy", action="store_true", help="run the deploy command at the end")
    return p


@dataclass
class Context:
    roles: RoleFiles
    output: Output
    fetcher: Fetcher = fetch
    resolver: Resolver = resolve


def deploy_command(directory: Path, checkout: Path, password_file: Path | None = None) -> list[str]:
    inventory = directory / INVENTORY
    try:
        shown = str(inventory.resolve().relative_to(checkout.resolve()))
    except ValueError:
        shown = str(inventory)
    vault = ["--vault-password-file", str(password_file)] if password_file else ["--ask-vault-pass"]
    return ["ansible-playbook", "site.yml", "-i", shown, *vault]


# ---- the Vault file ---------------------------------------------------------------------------


def read_vault(output: Output, password: str) -> dict[str, Any]:
    text = output.read(VAULT)
    if text is None:
        return {}
    if not is_encrypted(text):
        raise VaultError(f"{VAULT} exists but is not encrypted: encrypt or remove it first")
    data = yaml.safe_load(decrypt(text, password)) or {}
    if not isinstance(data, dict):
        raise VaultError(f"{VAULT} does not hold a mapping of variables")
    return data


def plan_files(
    ctx: Context, answers: Answers, vault_data: dict[str, Any], old_vault: dict[str, Any],
    password: str,
) -> list[Planned]:  # fmt: skip
    redirect, post_logout = ctx.roles.registration_uris(answers.hub.server_name)
    main = render_main(
        to_variables(answers, ctx.roles), {"redirect": redirect, "post_logout": post_logout}
    )
    inventory = render_inventory(
        answers.hub.address or answers.hub.server_name, answers.hub.ansible_user
    )
    out = ctx.output
    vault_text = encrypt(render_vault_plain(vault_data), password)
    same_vault = out.read(VAULT) is not None and vault_data == old_vault
    return [
        out.plan(INVENTORY, inventory),
        out.plan(MAIN, main),
        out.plan(VAULT, vault_text, same=same_vault, mode=0o600),
    ]


def report(planned: list[Planned], say: Any) -> None:
    for item in planned:
        say(f"  {item.path}: {item.status.value}")


# ---- non-interactive ----------------------------------------------------------------------


def _flags(answers: Answers, args: argparse.Namespace) -> None:
    if args.server_name:
        answers.hub.server_name = args.server_name
    if args.provider:
        answers.login.provider = args.provider
    if args.client_id:
        answers.login.client_id = args.client_id
    if args.email is not None:
        answers.certificate.email = args.email
    if args.certificate:
        answers.certificate.mode = args.certificate


def _client_secret(args: argparse.Namespace) -> str | None:
    if args.client_secret_file:
        try:
            text: str = args.client_secret_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise AnswerError(
                "apache_oidc_client_secret",
                f"cannot read {args.client_secret_file}: {exc.strerror}",
            ) from None
        return text.strip()
    secret = os.environ.get(SECRET_ENV)
    return secret or None


def _provider(
    ctx: Context, args: argparse.Namespace, answers: Answers, errors: list[AnswerError]
) -> Provider | None:
    """The provider's discovery document (None offline), the issuer filled in from it."""
    if not answers.login.provider:
        return None
    try:
        answers.login.provider = metadata_url_for(answers.login.provider)
        if args.offline:
            answers.login.issuer = answers.login.issuer or expected_issuer(answers.login.provider)
            return None
        provider = discover(answers.login.provider, ctx.fetcher)
        answers.login.issuer = provider.issuer
        return provider
    except DiscoveryError as exc:
        errors.append(AnswerError("apache_oidc_provider_metadata_url", str(exc)))
        return None


def _vault_and_secret(
    ctx: Context, args: argparse.Namespace, checks: Checks, errors: list[AnswerError]
) -> tuple[str, dict[str, Any], str]:
    """The Vault password, what the Vault holds now, and the client secret (new or kept).
    A missing password raises VaultError; a missing or bad secret is added to ``errors``."""
    password = password_from(args.vault_password_file)
    if password is None:
        raise VaultError(
            "a Vault password is needed: --vault-password-file FILE or $SERVICEHUB_VAULT_PASSWORD"
        )
    old_vault = read_vault(ctx.output, password)
    secret = str(_client_secret(args) or old_vault.get(VAULT_SECRET_VAR) or "")
    try:
        if not secret:
            raise AnswerError(
                "apache_oidc_client_secret",
                f"is required: --client-secret-file FILE or ${SECRET_ENV}",
            )
        checks.client_secret(secret)
    except AnswerError as exc:
        errors.append(exc)
    return password, old_vault, secret


def non_interactive(ctx: Context, args: argparse.Namespace, current: Answers) -> int:
    def say(text: str = "") -> None:
        print(text, flush=True)

    errors: list[AnswerError] = []
    answers = current
    try:
        if args.answers:
            data = yaml.safe_load(args.answers.read_text(encoding="utf-8"))
            answers = apply_answers(current, data)
        _flags(answers, args)
    except (OSError, yaml.YAMLError) as exc:
        say(f"servicehub-configure: cannot read {args.answers}: {exc}")
        return 2
    except AnswerError as exc:
        say(f"servicehub-configure: {args.answers}: {exc}")
        return 2
    checks = Checks(ctx.roles)
    answers.certificate.mode = answers.certificate.mode.replace("_", "-")
    provider = _provider(ctx, args, answers, errors)
    try:
        answers.login.groups_claim = checks.groups_claim(answers.login.groups_claim, None)
    except AnswerError:
        pass  # reported by check_all
    errors += check_all(answers, checks, provider, None if args.offline else ctx.resolver)
    try:
        password, old_vault, secret = _vault_and_secret(ctx, args, checks, errors)
    except VaultError as exc:
        say(f"servicehub-configure: {exc}")
        return 2
    if errors:
        say("servicehub-configure: refused:")
        for error in errors:
            say(f"  {error}")
        return 2
    vault_data = {**old_vault, VAULT_SECRET_VAR: str(secret)}
    planned = plan_files(ctx, answers, vault_data, old_vault, password)
    edited = [p for p in planned if p.status is Status.HAND_EDITED]
    if edited and not args.overwrite:
        for item in edited:
            say(f"{item.path} was edited by hand; its changes would be lost:")
            say(diff(item))
        say("servicehub-configure: nothing written; --overwrite replaces these files")
        return 1
    ctx.output.write(planned)
    report(planned, say)
    return finish(ctx, args, None, password_file=args.vault_password_file)


def finish(
    ctx: Context, args: argparse.Namespace, prompter: Prompter | None, password_file: Path | None
) -> int:
    shown = deploy_command(ctx.output.directory, ctx.roles.checkout)
    say = prompter.say if prompter else print
    say()
    say("Deploy the hub with:")
    say(f"  cd {shlex.quote(str(ctx.roles.checkout))}")
    say("  " + shlex.join(shown))
    run = args.deploy
    if prompter is not None and not run:
        run = prompter.confirm("Run it now?", False)
    if not run:
        return 0
    command = deploy_command(ctx.output.directory, ctx.roles.checkout, password_file)
    playbook = Path(sys.executable).parent / "ansible-playbook"
    if playbook.exists():
        command[0] = str(playbook)
    return 0 if subprocess.run(command, cwd=ctx.roles.checkout, check=False).returncode == 0 else 1


# ---- interactive --------------------------------------------------------------------------


def interactive(ctx: Context, args: argparse.Namespace, current: Answers, p: Prompter) -> int:
    p.say("servicehub-configure: answer each question; Enter takes the value in [brackets].")
    p.say(f"Files go to {ctx.output.directory}.")
    _flags(current, args)
    password = password_from(args.vault_password_file)
    old_vault: dict[str, Any] = {}
    if ctx.output.read(VAULT) is not None:
        while True:
            if password is None:
                password = p.secret(f"Vault password of {VAULT}")
            try:
                old_vault = read_vault(ctx.output, password)
                break
            except VaultError as exc:
                p.say(f"  ! {exc}")
                if args.vault_password_file or not is_encrypted(ctx.output.read(VAULT) or ""):
                    return 2
                password = None
    result = Wizard(p, ctx.roles, ctx.fetcher, ctx.resolver).run(
        current, has_secret=bool(old_vault.get(VAULT_SECRET_VAR))
    )
    vault_data = {**old_vault}
    if result.secret is not None:
        vault_data[VAULT_SECRET_VAR] = result.secret
    p.section("Writing")
    if password is None:
        p.say("The client secret goes into an Ansible Vault file, encrypted with a password you")
        p.say("choose now. ansible-playbook asks for it at every deploy: keep it safe.")
        password = p.new_password("Vault password")
    planned = plan_files(ctx, result.answers, vault_data, old_vault, password)
    kept = 0
    for item in planned:
        if item.status is Status.UPDATE:
            p.say(diff(item))
        elif item.status is Status.HAND_EDITED:
            p.say(f"{item.path} was changed since servicehub-configure wrote it:")
            p.say(diff(item))
            if not p.confirm(f"Replace {item.path}, losing those changes?", False):
                item.status, item.text = Status.KEPT, item.old
                kept += 1
    ctx.output.write(planned)
    report(planned, p.say)
    status = finish(ctx, args, p, password_file=args.vault_password_file)
    return status or (1 if kept else 0)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    roles = RoleFiles(CHECKOUT)
    directory = (args.dir or CHECKOUT).resolve()
    ctx = Context(roles=roles, output=Output(directory))
    try:
        current = load_answers_from(directory, roles) or new_answers(roles)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"servicehub-configure: cannot read the current files: {exc}", file=sys.stderr)
        return 2
    try:
        if args.answers or args.non_interactive:
            return non_interactive(ctx, args, current)
        return interactive(ctx, args, current, Prompter())
    except Aborted:
        print("servicehub-configure: aborted, nothing written", file=sys.stderr)
        return 130
    except VaultError as exc:
        print(f"servicehub-configure: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
