"""Planned session addresses: never one the network holds, reused only after the pool wraps."""

import pytest

from servicehub.addresses import AddressPool, network_addresses, planned_subnet


def test_skips_the_gateway_and_what_the_network_holds():
    pool = AddressPool("10.9.0.0/24", in_use=["10.9.0.3"])
    assert pool.take() == "10.9.0.4"  # after the highest address held
    taken = {pool.take() for _ in range(251)}
    assert "10.9.0.1" not in taken and "10.9.0.255" not in taken and "10.9.0.3" not in taken
    assert "10.9.0.2" in taken  # reached again only after coming round


def test_an_address_is_not_handed_out_twice_before_the_pool_wraps():
    pool = AddressPool("10.9.0.0/28")  # .2 to .14
    first = [pool.take() for _ in range(13)]
    assert len(set(first)) == 13 and pool.take() is None  # all in use: none left


def test_refresh_frees_what_the_network_no_longer_holds():
    pool = AddressPool("10.9.0.0/28")
    for _ in range(13):
        pool.take()
    pool.refresh(["10.9.0.5"])
    assert pool.take() == "10.9.0.6"


def test_tiny_subnets_are_refused():
    with pytest.raises(ValueError, match="too small"):
        AddressPool("10.9.0.0/30")


def test_reads_a_network_inspect():
    data = {
        "Labels": {"servicehub.addressing": "planned"},
        "IPAM": {"Config": [{"Subnet": "fd00::/64"}, {"Subnet": "172.20.0.0/16"}]},
        "Containers": {"a": {"IPv4Address": "172.20.0.7/16"}, "b": {"IPv4Address": ""}},
    }
    assert planned_subnet(data) == "172.20.0.0/16"
    assert network_addresses(data) == ["172.20.0.7"]
    assert planned_subnet({**data, "Labels": {}}) is None  # made without a subnet
