import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from receiver.door.keys import client_key, key_network


def test_ipv4_clients_are_keyed_by_address() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"


def test_ipv6_clients_are_grouped_by_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_key("::1") == "::/64"


def test_ipv4_mapped_ipv6_is_keyed_as_ipv4() -> None:
    assert client_key("::ffff:198.51.100.9") == "198.51.100.9"


def test_prefix_length_is_configurable() -> None:
    assert client_key("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert client_key("2001:db8:1:2::1", 128) == "2001:db8:1:2::1"


@given(st.integers(0, 2**128 - 1), st.integers(32, 127))
def test_ipv6_key_is_the_enclosing_network(value: int, prefix: int) -> None:
    address = ipaddress.IPv6Address(value)
    if address.ipv4_mapped is not None:
        return
    network = ipaddress.IPv6Network(client_key(str(address), prefix))
    assert network.prefixlen == prefix and address in network


def test_key_network_names_a_cidr() -> None:
    assert key_network("203.0.113.7") == "203.0.113.7/32"
    assert key_network("2001:db8::/64") == "2001:db8::/64"
