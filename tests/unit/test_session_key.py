"""Every name of a session, pinned to what earlier versions wrote: a running hub's containers,
route files, lock files and reaper state must still be recognised after an upgrade."""

from servicehub.session_key import SessionKey, app_network, route_file_prefix

KEY = SessionKey("nb", "alice-abcdefghijklmnop")


def test_each_derived_name_is_the_literal_of_earlier_versions():
    assert KEY.container("hub") == "hub-nb-alice-abcdefghijklmnop"
    assert KEY.network("hub") == app_network("hub", "nb") == "hub-nb"
    assert KEY.router("hub") == "hub-nb-alice-abcdefghijklmnop"
    assert KEY.provider_router("hub") == "hub-nb-alice-abcdefghijklmnop@file"
    assert KEY.route_file("hub") == "hub-session-nb-alice-abcdefghijklmnop.yml"
    assert KEY.route_file("hub").startswith(route_file_prefix("hub"))
    assert KEY.lock_file == "nb.alice-abcdefghijklmnop.lock"
    assert KEY.state_key == "nb/alice-abcdefghijklmnop"


def test_a_key_is_the_app_and_slug_pair():
    assert KEY == ("nb", "alice-abcdefghijklmnop")
    assert {KEY: 1}[("nb", "alice-abcdefghijklmnop")] == 1
    assert SessionKey("reaper", "run").lock_file == "reaper.run.lock"  # the reaper's run lock
