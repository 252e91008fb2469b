"""The prefix index and cache against Python's `ipaddress` as the oracle."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist import BlocklistCache, PrefixIndex, parse_network
from blocklist.entries import parse_address

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


@st.composite
def networks(draw: st.DrawFn) -> IPNet:
    if draw(st.booleans()):
        length = draw(st.integers(0, 32))
        value = draw(st.integers(0, 2**32 - 1)) >> (32 - length) << (32 - length)
        return ipaddress.IPv4Network((value, length))
    length = draw(st.integers(0, 128))
    value = draw(st.integers(0, 2**128 - 1)) >> (128 - length) << (128 - length)
    return ipaddress.IPv6Network((value, length))


def near(net: IPNet) -> st.SearchStrategy[str]:
    """Addresses inside, at the edges of, and just outside `net`."""
    top = (1 << net.max_prefixlen) - 1
    first, last = int(net.network_address), int(net.broadcast_address)
    cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    values = st.sampled_from([first, last, max(0, first - 1), min(top, last + 1)])
    return values.map(lambda v: str(cls(v)))


MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def as_client(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The oracle's view of a client: IPv4-mapped IPv6 is the IPv4 address it carries."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def as_entry(net: IPNet) -> IPNet:
    """... and an entry inside ::ffff:0:0/96 is the IPv4 network it maps."""
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(MAPPED):
        value = int(net.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((value, net.prefixlen - 96))
    return net


addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
    st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(networks(), max_size=30), st.data())
def test_index_agrees_with_ipaddress(nets: list[IPNet], data: st.DataObject) -> None:
    nets = [as_entry(net) for net in nets]
    index = PrefixIndex()
    for net in nets:
        index.add(parse_network(str(net)))
    assert len(index) == len(set(nets))
    probes = [data.draw(addresses) for _ in range(10)]
    probes += [data.draw(near(net)) for net in nets[:10]]
    for ip in probes:
        address = as_client(ip)
        covering = [n for n in nets if n.version == address.version and address in n]
        found = index.match(*parse_address(ip), now=0.0)
        if not covering:
            assert found is None, ip
        else:
            best = max(covering, key=lambda n: n.prefixlen)
            assert found is not None and str(found[0]) == str(best), ip
        assert index.covers(ip, 0.0) == bool(covering)


@settings(max_examples=100, deadline=None)
@given(st.lists(networks(), min_size=1, max_size=20), st.data())
def test_removal_agrees_with_ipaddress(nets: list[IPNet], data: st.DataObject) -> None:
    nets = [as_entry(net) for net in nets]
    index = PrefixIndex()
    for net in nets:
        index.add(parse_network(str(net)))
    removed = set(data.draw(st.lists(st.sampled_from(nets), max_size=len(nets))))
    for net in removed:
        assert index.remove(parse_network(str(net)))
        assert not index.remove(parse_network(str(net)))
    kept = [n for n in set(nets) if n not in removed]
    assert len(index) == len(kept)
    for net in nets:
        ip = data.draw(near(net))
        address = as_client(ip)
        assert index.covers(ip, 0.0) == any(
            n.version == address.version and address in n for n in kept
        )


def test_v4_mapped_clients_meet_v4_entries() -> None:
    index = PrefixIndex()
    index.add(parse_network("203.0.113.0/24"))
    assert index.covers("::ffff:203.0.113.9", 0.0)
    assert not index.covers("::ffff:203.0.114.9", 0.0)
    assert not index.covers("2001:db8::cb00:7109", 0.0)


def test_expired_entries_stop_matching_and_fall_back_to_shorter_prefixes() -> None:
    index = PrefixIndex()
    index.add(parse_network("198.51.100.7"), expires=100.0)
    index.add(parse_network("198.51.100.0/24"), expires=200.0)
    found = index.match(*parse_address("198.51.100.7"), now=50.0)
    assert found is not None and str(found[0]) == "198.51.100.7/32"
    found = index.match(*parse_address("198.51.100.7"), now=150.0)
    assert found is not None and str(found[0]) == "198.51.100.0/24"
    assert index.match(*parse_address("198.51.100.7"), now=250.0) is None
    assert index.sweep(150.0) == 1 and len(index) == 1


def test_cache_memo_never_outlives_a_change() -> None:
    cache = BlocklistCache(memo_size=4)
    assert not cache.check("192.0.2.1", now=0.0)
    cache.upsert("192.0.2.0/24")
    assert cache.check("192.0.2.1", now=0.0)  # the memoized "not blocked" was dropped
    cache.delete("192.0.2.0/24")
    assert not cache.check("192.0.2.1", now=0.0)
    cache.upsert("192.0.2.1", expires=10.0)
    assert cache.check("192.0.2.1", now=5.0)
    assert not cache.check("192.0.2.1", now=10.0)  # memoized verdict expires with its entry
    cache.upsert("10.0.0.0/24")
    for i in range(50):  # the memo stays bounded
        assert cache.check(f"10.0.0.{i}", now=0.0)
    assert cache._memo.currsize <= 4
    assert cache.index.get(parse_network("192.0.2.1")) == 10.0
