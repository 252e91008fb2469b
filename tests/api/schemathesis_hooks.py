"""Values of the API's named formats, for the contract tests (schemathesis hooks).

The OpenAPI document names a format where a regular expression cannot say what is valid
(a CIDR without host bits, an IP address, a mailbox); these strategies generate valid
values, so a request the schema calls valid is one the API must accept.
"""

from __future__ import annotations

import ipaddress

import schemathesis
from hypothesis import strategies as st

V4 = st.builds(
    lambda value, prefix: str(ipaddress.ip_network((value, prefix), strict=False)),
    st.integers(0, 2**32 - 1),
    st.integers(8, 32),  # shorter prefixes need "confirm": true
)
V6 = st.builds(
    lambda value, prefix: str(
        ipaddress.ip_network(((0x2001_0DB8 << 96) | value, prefix), strict=False)
    ),
    st.integers(0, 2**96 - 1),
    st.integers(32, 128),
)
ADDRESS = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
    st.integers(0, 2**96 - 1).map(lambda v: str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | v))),
)
MAILBOX = st.from_regex(r"\A[a-z0-9]([a-z0-9.+_-]{0,30}[a-z0-9])?@(mx|example)\.test\Z")

schemathesis.openapi.format("cidr", st.one_of(V4, V6, ADDRESS))
schemathesis.openapi.format("ip", ADDRESS)
schemathesis.openapi.format("mailbox", MAILBOX.filter(lambda m: ".." not in m))
