import pytest


@pytest.fixture(scope="module")
def pebble_root(host):
    """The ACME test server's roots, which the hub's certificate chains to."""
    host.run_test("curl -sk https://127.0.0.1:15000/roots/0 -o /tmp/pebble-root.pem")
    host.run_test("curl -sk https://127.0.0.1:15000/intermediates/0 >> /tmp/pebble-root.pem")
    return "/tmp/pebble-root.pem"
