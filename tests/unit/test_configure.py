"""servicehub-configure's pure logic: discovery checks, answers, variables, files, prompting."""

from __future__ import annotations

import io

import pytest
import yaml

from servicehub.configure import answers as model
from servicehub.configure.answers import AnswerError, Answers, App, Checks
from servicehub.configure.cli import deploy_command, main
from servicehub.configure.discovery import (
    DiscoveryError,
    Provider,
    check_discovery,
    metadata_url_for,
)
from servicehub.configure.files import (
    MAIN,
    Output,
    Status,
    diff,
    parse_inventory,
    render_inventory,
    render_main,
)
from servicehub.configure.prompt import Aborted, Prompter
from servicehub.configure.roles import CHECKOUT, RoleFiles
from servicehub.configure.vault import VaultError, decrypt, encrypt, password_from

ROLES = RoleFiles()
CHECKS = Checks(ROLES)
URL = "https://idp.example.org/realms/lab/.well-known/openid-configuration"
DOCUMENT = {
    "issuer": "https://idp.example.org/realms/lab",
    "authorization_endpoint": "https://idp.example.org/auth",
    "token_endpoint": "https://idp.example.org/token",
    "jwks_uri": "https://idp.example.org/jwks",
    "end_session_endpoint": "https://idp.example.org/logout",
    "code_challenge_methods_supported": ["plain", "S256"],
    "scopes_supported": ["openid", "email", "profile", "groups"],
    "claims_supported": ["sub", "email", "preferred_username", "groups"],
}
PROVIDER = check_discovery(DOCUMENT, URL)


# ---- discovery ----------------------------------------------------------------------------


def test_an_issuer_url_becomes_its_discovery_url():
    assert metadata_url_for("https://idp.example.org/realms/lab/") == URL
    assert metadata_url_for(URL) == URL
    with pytest.raises(DiscoveryError):
        metadata_url_for("idp.example.org")


def test_a_good_document_gives_the_provider():
    assert PROVIDER.issuer == "https://idp.example.org/realms/lab"
    assert PROVIDER.offers_claim("email") and not PROVIDER.offers_claim("employee_number")
    assert PROVIDER.warnings == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"issuer": "https://other.example.org"}, "issuer"),
        ({"token_endpoint": None}, "token_endpoint"),
        ({"jwks_uri": ""}, "jwks_uri"),
        ({"code_challenge_methods_supported": ["plain"]}, "S256"),
        ({"code_challenge_methods_supported": None}, "S256"),
        ({"scopes_supported": ["email"]}, "openid"),
    ],
)
def test_a_document_the_hub_cannot_use_is_refused(change, message):
    with pytest.raises(DiscoveryError, match=message):
        check_discovery({**DOCUMENT, **change}, URL)


def test_a_document_without_claims_warns_and_checks_none():
    provider = check_discovery({**DOCUMENT, "claims_supported": None}, URL)
    assert provider.offers_claim("anything") and provider.warnings


# ---- checks -------------------------------------------------------------------------------


def test_checks_name_the_variable_and_use_the_roles_patterns():
    with pytest.raises(AnswerError, match=r"^apache_oidc_server_name: "):
        CHECKS.server_name("Hub_Example.org")
    assert CHECKS.server_name(" hub.example.org ") == "hub.example.org"
    with pytest.raises(AnswerError, match=r"^apache_oidc_user_claim: .*offers sub, email"):
        CHECKS.claim("apache_oidc_user_claim", "employee_number", PROVIDER)
    assert CHECKS.groups_claim("none", PROVIDER) == ""
    with pytest.raises(AnswerError, match="apache_oidc_require_claims"):
        CHECKS.require_claims(["department:physics"], PROVIDER)
    assert CHECKS.require_claims(["groups:lab", " "], PROVIDER) == ["groups:lab"]
    with pytest.raises(AnswerError, match="offline_access"):
        CHECKS.scope("openid offline_access", PROVIDER)
    with pytest.raises(AnswerError, match="certbot_email"):
        CHECKS.email("admin-at-example.org")


def test_a_secret_is_never_in_a_message():
    with pytest.raises(AnswerError) as refused:
        CHECKS.client_secret('with"quote')
    assert 'with"quote' not in str(refused.value)


def test_an_unresolvable_name_is_refused():
    with pytest.raises(AnswerError, match="does not resolve"):
        model.resolve("nohub.invalid")


@pytest.mark.parametrize(
    ("app", "key"),
    [
        (App(image="Not An Image!"), "servicehub_apps.web.image"),
        (App(image="lab/web:1", port=70000), "servicehub_apps.web.port"),
        (App(image="lab/web:1", path_prefix="/web"), "servicehub_apps.web.route.path_prefix"),
        (App(image="lab/web:1", memory="lots"), "servicehub_apps.web.limits.memory"),
        (App(image="lab/web:1", cpus=0.1), "servicehub_apps.web.cpu_threshold"),
        (App(image="lab/web:1", volume="/"), "servicehub_apps.web.volume.mount"),
    ],
)
def test_apps_are_checked_by_the_daemons_parser(app, key):
    with pytest.raises(AnswerError) as refused:
        model.check_apps({"web": app})
    assert refused.value.key == key


def test_two_apps_on_one_route_are_refused():
    with pytest.raises(AnswerError, match="same route"):
        model.check_apps({"a": App(image="a"), "b": App(image="b")})


# ---- variables ----------------------------------------------------------------------------


def answers() -> Answers:
    result = model.new_answers(ROLES)
    result.hub.server_name = "hub.example.org"
    result.login.provider, result.login.issuer = URL, PROVIDER.issuer
    result.apps = {"web": App(image="lab/web:1", memory="2g", allow_groups=["lab"])}
    result.certificate = model.Certificate(mode="staging", email="admin@example.org")
    return result


def test_only_what_differs_from_the_roles_defaults_is_written():
    variables = model.to_variables(answers(), ROLES)
    assert "apache_oidc_user_claim" not in variables  # sub, the role's default
    assert "apache_oidc_scope" not in variables
    assert variables["certbot_mode"] == "acme"  # the role's default is self_signed
    assert variables["certbot_acme_server"] == model.LETS_ENCRYPT_STAGING
    assert variables["apache_oidc_client_secret"] == "{{ vault_apache_oidc_client_secret }}"
    assert variables["servicehub_apps"]["web"] == {
        "image": "lab/web:1",
        "port": 8000,
        "limits": {"memory": "2g"},
        "volume": {"name": "{app}-{slug}", "mount": "/data"},
        "allow": {"groups": ["lab"]},
    }
    assert variables["servicehub_images_pull"] == ["lab/web:1"]


def test_variables_read_back_give_the_same_answers():
    original = answers()
    original.apps["web"].extra = {"idle_timeout": "30s", "limits": {"pids": 64}}
    original.kept = {"traefik_log_level": "DEBUG"}
    variables = model.to_variables(original, ROLES)
    assert model.from_variables(variables, ROLES) == original
    production = model.from_variables({**variables, "certbot_acme_server": None}, ROLES)
    assert production.certificate.mode in ("production", "acme")


def test_an_answers_file_sets_answers_and_refuses_unknown_keys():
    result = model.apply_answers(
        answers(),
        {"login": {"require_claims": ["groups:lab"]},
         "apps": {"short": {"image": "x/y", "volume": None, "idle_timeout": "30s"}}},
    )  # fmt: skip
    assert result.login.require_claims == ["groups:lab"]
    assert result.apps["short"].volume is None
    assert result.apps["short"].extra == {"idle_timeout": "30s"}
    with pytest.raises(AnswerError, match=r"login\.secret"):
        model.apply_answers(answers(), {"login": {"secret": "x"}})


def test_check_all_collects_every_refusal():
    bad = answers()
    bad.hub.server_name = "Bad Name"
    bad.login.user_claim = "employee_number"
    bad.apps["web"].image = "Not An Image!"
    keys = {e.key for e in model.check_all(bad, CHECKS, PROVIDER, None)}
    assert keys == {
        "apache_oidc_server_name",
        "apache_oidc_user_claim",
        "servicehub_apps.web.image",
    }
    assert model.check_all(answers(), CHECKS, PROVIDER, lambda name: ["192.0.2.1"]) == []


# ---- roles --------------------------------------------------------------------------------


def test_registration_uris_come_from_the_apache_oidc_role():
    defaults = ROLES.defaults("apache_oidc")
    redirect, post_logout = ROLES.registration_uris("hub.example.org")
    assert redirect == "https://hub.example.org" + defaults["apache_oidc_redirect_path"]
    assert post_logout == "https://hub.example.org/"
    assert ROLES.registration_uris("localhost", "https://localhost:8443")[0].startswith(
        "https://localhost:8443/"
    )


# ---- files --------------------------------------------------------------------------------


def test_main_yml_is_commented_and_parses_back(tmp_path):
    variables = model.to_variables(answers(), ROLES)
    text = render_main(variables, {"redirect": "https://r", "post_logout": "https://p/"})
    assert yaml.safe_load(text) == variables
    assert "# The hub's DNS name." in text
    assert all(len(line) <= 160 for line in text.splitlines())  # yamllint's limit


def test_inventory_round_trip():
    assert parse_inventory(render_inventory("203.0.113.7", "debian")) == ("203.0.113.7", "debian")


def test_hand_edits_are_detected_by_the_record(tmp_path):
    out = Output(tmp_path)
    first = out.plan(MAIN, "a: 1\n")
    assert first.status is Status.NEW
    out.write([first])
    assert out.plan(MAIN, "a: 1\n").status is Status.SAME
    assert out.plan(MAIN, "a: 2\n").status is Status.UPDATE
    (tmp_path / MAIN).write_text("a: 1  # mine\n")
    edited = out.plan(MAIN, "a: 2\n")
    assert edited.status is Status.HAND_EDITED
    assert "-a: 1  # mine" in diff(edited) and "+a: 2" in diff(edited)


def test_vault_round_trip_and_wrong_password(tmp_path):
    text = encrypt("secret: value\n", "pw")
    assert text.startswith("$ANSIBLE_VAULT;1.1;AES256") and "value" not in text
    assert decrypt(text, "pw") == "secret: value\n"
    with pytest.raises(VaultError):
        decrypt(text, "other")
    password = tmp_path / "pw"
    password.write_text("from-file\nignored\n")
    assert password_from(password, {}) == "from-file"
    assert password_from(None, {"SERVICEHUB_VAULT_PASSWORD": "from-env"}) == "from-env"
    assert password_from(None, {}) is None


def test_deploy_command_is_the_one_in_the_readme(tmp_path):
    assert deploy_command(CHECKOUT, CHECKOUT) == [
        "ansible-playbook", "site.yml", "-i", "inventory", "--ask-vault-pass",
    ]  # fmt: skip


# ---- prompting ----------------------------------------------------------------------------


def prompter(*replies: str) -> tuple[Prompter, io.StringIO]:
    queue = list(replies)
    out = io.StringIO()

    def read(_: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return Prompter(read=read, read_secret=read, out=out), out


def test_a_refused_answer_is_asked_again_with_the_reason():
    p, out = prompter("Bad Name", "", "hub.example.org")
    assert p.ask("Name", "", CHECKS.server_name) == "hub.example.org"
    assert out.getvalue().count("apache_oidc_server_name:") == 2


def test_enter_takes_the_default_and_keeps_a_secret():
    p, _ = prompter("", "")
    assert p.ask("Name", "hub.example.org", CHECKS.server_name) == "hub.example.org"
    assert p.ask_secret("Secret", CHECKS.client_secret, keep=True) is None


def test_end_of_input_aborts():
    p, _ = prompter()
    with pytest.raises(Aborted):
        p.confirm("Go?", True)


def test_help_runs():
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0


def test_provider_type_is_frozen():
    with pytest.raises(AttributeError):
        PROVIDER.issuer = "x"  # type: ignore[misc]
    assert isinstance(PROVIDER, Provider)
