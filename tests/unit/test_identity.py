import re

import pytest

from servicehub.identity import IdentityError, make_slug, parse_identity, secret_matches

SAFE_SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40})$")
NASTY_IDS = [
    "alice@example.org",
    "a/b/../../etc",
    "josé",
    "\u00e9",  # precomposed
    "e\u0301",  # decomposed: looks the same, different bytes
    "`backtick`",
    "quote\"'",
    "{{ template }}",
    "x" * 255,
    "日本語" * 85,
    "smile \U0001f600",  # beyond U+FFFF
    "line\u2028sep\u0085nel",  # line breaks to a YAML parser, not to HTTP
]


@pytest.mark.parametrize("user", NASTY_IDS)
def test_slug_is_safe_for_every_id(user):
    slug = make_slug("https://issuer", user)
    assert SAFE_SLUG.match(slug), slug
    assert len(slug) <= 33


def test_slugs_differ_for_distinct_ids_and_issuers():
    slugs = {make_slug("iss", u) for u in NASTY_IDS}
    assert len(slugs) == len(NASTY_IDS)
    assert make_slug("iss-a", "alice") != make_slug("iss-b", "alice")
    assert make_slug("iss", "alice") == make_slug("iss", "alice")


def test_slug_keeps_a_readable_hint():
    assert make_slug("iss", "Alice.Smith@example.org").startswith("alice-smith-")


def parse(users, groups=()):
    return parse_identity(list(users), list(groups), "iss")


def test_one_clean_header_is_accepted():
    ident = parse(["alice@example.org"], ["lab, admins ,"])
    assert ident.user == "alice@example.org"
    assert ident.groups == {"lab", "admins"}


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ([], "missing"),
        (["alice", "bob"], "2 times"),
        (["alice", "alice"], "2 times"),
        ([""], "empty"),
        ([" alice"], "padded"),
        (["ali\nce"], "control"),
        (["ali\x00ce"], "control"),
        (["bad\udcff"], "UTF-8"),
        (["x" * 1025], "longer"),
    ],
)
def test_bad_user_headers_are_refused(users, message):
    with pytest.raises(IdentityError, match=message):
        parse(users)


def test_groups_header_twice_is_refused():
    with pytest.raises(IdentityError, match="2 times"):
        parse(["alice"], ["a", "b"])


def test_proxy_secret_must_be_sent_exactly_once():
    assert secret_matches([], None)
    assert secret_matches(["s3cret-s3cret-s3cret"], "s3cret-s3cret-s3cret")
    assert not secret_matches([], "s3cret-s3cret-s3cret")
    assert not secret_matches(["wrong"], "s3cret-s3cret-s3cret")
    assert not secret_matches(["s3cret-s3cret-s3cret"] * 2, "s3cret-s3cret-s3cret")
