"""deploy/ as an operator runs it: the shipped files with deploy/README.md's placeholders
filled in with the addresses of hosts made on this machine (tests/support/netns.py), and
nothing else changed.

What the operator writes, and so what the test writes:

- `/etc/floodgate/floodgate.env` on each host: deploy/floodgate.env.example with the words
  of README's "What you fill in" table replaced (`THIS_HOST_ADDRESS` ...), the store's URI
  in place of the example's, a token in place of `CHANGE-ME-...`;
- `/etc/default/haproxy` on the HAProxy host: `MX1_ADDRESS=...` lines (README step 6);
- `/etc/floodgate/tls/{cert,key}.pem`, mode 0600, root's (README step 7), with the
  receiver's drop-in `floodgate-receiver.service.d/tls.conf` used as shipped;
- `prometheus.yml` with its addresses filled in, beside the shipped `alerts.yml`.

One line more than the example in each env file: `FLOODGATE_WEBHOOK_ALLOW_PRIVATE=true`, as
an operator whose webhook endpoints live on its own network writes it (the fleet's
"Internet" is private addresses; without it no webhook could be registered here).

The units run through tests/support/systemd.py (as systemd would, `/opt/floodgate` being
this checkout), HAProxy as Debian's unit runs it but in the foreground (`-db` for `-Ws`),
with the variables of `/etc/default/haproxy`. The one stand-in is the store: the embedded
single-node store on a host of its own, for the replica set.
"""

from __future__ import annotations

import datetime
import re
import resource
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstore.embedded import EmbeddedStore
from tests.support import netns, systemd
from tests.support.systemd import Root, Service, Unit, environment_file

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = DEPLOY / "systemd"
ENV_FILE = "/etc/floodgate/floodgate.env"
STORE_PORT = 27017
PLACEHOLDER_TABLE = re.compile(r"<!-- placeholders -->\n(.*?)<!-- /placeholders -->", re.S)


def placeholders() -> list[str]:
    """The words deploy/README.md tells the operator to replace (its table's first column;
    the URI and the CHANGE-ME secrets are values, not words, and handled apart)."""
    table = PLACEHOLDER_TABLE.search((DEPLOY / "README.md").read_text())
    assert table, "deploy/README.md has lost its placeholder table"
    words = []
    for row in table.group(1).splitlines()[2:]:
        first = row.split("|")[1]
        words += re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", first)
    return [w for w in words if not w.startswith("FLOODGATE_")]


def fill(text: str, values: dict[str, str]) -> str:
    """`text` with every documented placeholder replaced by `values` (each must be given,
    unless it appears only in comments: an optional third MX host, say)."""
    for word in placeholders():
        pattern = re.compile(rf"\b{word}\b")
        if word in values:
            text = pattern.sub(values[word], text)
    left = [
        line
        for line in text.splitlines()
        if not line.lstrip().startswith("#") and any(w in line for w in placeholders())
    ]
    assert not left, f"placeholders left unfilled: {left}"
    return text


def env_file(values: dict[str, str], uri: str, token: str) -> str:
    """/etc/floodgate/floodgate.env as the operator writes it from the example."""
    lines = []
    for line in fill((DEPLOY / "floodgate.env.example").read_text(), values).splitlines():
        if line.startswith("FLOODGATE_MONGODB_URI="):
            line = f"FLOODGATE_MONGODB_URI={uri}"
        elif line.startswith("FLOODGATE_ADMIN_TOKEN="):
            line = f"FLOODGATE_ADMIN_TOKEN={token}"
        assert "CHANGE-ME" not in line or line.startswith("#"), line
        lines.append(line)
    return "\n".join(lines) + "\n"


def certificate(name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for `name`: the operator's "real" certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def common_name(der: bytes) -> str:
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value)


@dataclass
class MxHost:
    """An MX host: its namespace, its file system, its receiver."""

    host: netns.Host
    root: Root
    name: str
    receiver: Service | None = None
    webhooks: Service | None = None  # the dispatcher (floodgate-webhooks.service)

    @property
    def address(self) -> str:
        return self.host.address


@dataclass
class Fleet:
    """Two MX hosts (HAProxy and the API on the first), the store's host, the Internet."""

    lan: netns.Lan
    mx: list[MxHost]
    store_host: netns.Host
    internet: netns.Host
    token: str
    domain: str
    api: Service
    haproxy: subprocess.Popen[bytes]
    haproxy_log: Path
    values: dict[str, str]
    base: Path
    services: list[Service] = field(default_factory=list)

    @property
    def smtp(self) -> tuple[str, int]:
        """Where the Internet sends mail: HAProxy's :25 on the first MX host."""
        return self.mx[0].address, 25

    @property
    def api_url(self) -> str:
        return f"http://{self.values['API_ADDRESS']}:8025"

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """A GET from the store's host (an operator's or Prometheus's vantage point)."""
        response: httpx.Response = self.store_host.call(httpx.get, url, timeout=5, **kwargs)
        return response

    def ready(self, url: str) -> bool:
        try:
            return self.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        response: httpx.Response = self.store_host.call(
            httpx.request, method, self.api_url + path, headers=headers, timeout=10, **kwargs
        )
        return response

    def servers(self) -> dict[str, str]:
        """HAProxy's view of its receivers (`mx1` → `UP`/`DOWN`, ...), from its stats page
        on the first MX host's loopback (STATS_BIND's default)."""
        try:
            csv = self.mx[0].host.call(httpx.get, "http://127.0.0.1:8404/stats;csv", timeout=2).text
        except httpx.HTTPError:
            return {}
        states = {}
        for line in csv.splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "receivers" and fields[1] != "BACKEND":
                states[fields[1]] = fields[17]
        return states

    def logs(self) -> str:
        lines = self.haproxy_log.read_text(errors="replace").splitlines()
        said = "\n".join(line for line in lines if " stats stats/" not in line)  # our polls
        parts = [f"--- haproxy\n{said[-3000:]}"]
        parts += [f"--- {s.log_path}\n{s.log()[-3000:]}" for s in self.services]
        return "\n".join(parts)


def _haproxy(host: netns.Host, root: Root, values: dict[str, str]) -> subprocess.Popen[bytes]:
    default = "".join(f"{w}={values[w]}\n" for w in ("MX1_ADDRESS", "MX2_ADDRESS"))
    path = root.write("/etc/default/haproxy", default, mode=0o644)
    env = {"PATH": systemd.DEFAULT_PATH, **environment_file(path)}
    # MAXCONN's default, 40,000, makes HAProxy ask for 80,000 descriptors and refuse to
    # start under a lower hard limit (systemd gives its units 524,288; a test machine may
    # give 20,000): the one optional knob set here, to what this machine allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * 40_000 + 100:
        env["MAXCONN"] = str((hard - 100) // 2)
    log = root.directory / "journal" / "haproxy.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return host.popen(
            ["haproxy", "-db", "-f", str(DEPLOY / "haproxy.cfg")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def fleet(workers: tuple[int, ...] = (1, 1)) -> Iterator[Fleet]:
    """The fleet, up and seen UP by HAProxy; everything ended and removed afterwards, by
    pid and by namespace, however the body ends."""
    with ExitStack() as stack:
        base = stack.enter_context(systemd.host_root("fleet")).directory
        lan = stack.enter_context(netns.Lan())
        addresses = {"mx1": "10.0.1.11", "mx2": "10.0.2.11"}
        mx_hosts = {name: lan.host(name, address) for name, address in addresses.items()}
        store_host = lan.host("store", "10.0.3.11")
        internet = lan.host("internet", *(f"10.0.9.{n}" for n in range(1, 41)))

        store = EmbeddedStore(base / "store", host=store_host.address, port=STORE_PORT)
        uri = store_host.call(store.start)
        stack.callback(store.stop)

        token = secrets.token_urlsafe(24)
        values = {
            "HAPROXY_ADDRESSES": ",".join(addresses.values()),
            "MX1_ADDRESS": addresses["mx1"],
            "MX2_ADDRESS": addresses["mx2"],
            "API_ADDRESS": addresses["mx1"],
            "ALERTMANAGER_ADDRESS": store_host.address,
        }
        example = environment_file(DEPLOY / "floodgate.env.example")
        domain = example["FLOODGATE_DOMAINS"].split(",")[0]
        receiver_unit = Unit.read(UNITS / "floodgate-receiver.service")
        api_unit = Unit.read(UNITS / "floodgate-api.service")
        webhooks_unit = Unit.read(UNITS / "floodgate-webhooks.service")
        services: list[Service] = []
        mx = []
        for (name, host), count in zip(mx_hosts.items(), workers, strict=True):
            root = Root(base / name)
            own = {
                **values,
                "THIS_HOST_ADDRESS": host.address,
                "THIS_HOST_NAME": f"{name}.example.net",
            }
            text = env_file(own, uri, token)
            if count != 1:  # a dedicated host sets its core count (the example says so)
                text = text.replace("FLOODGATE_WORKERS=1\n", f"FLOODGATE_WORKERS={count}\n")
            root.write(ENV_FILE, text + "FLOODGATE_WEBHOOK_ALLOW_PRIVATE=true\n")
            cert, key = certificate(own["THIS_HOST_NAME"])
            root.write("/etc/floodgate/tls/cert.pem", cert.decode())
            root.write("/etc/floodgate/tls/key.pem", key.decode())
            mx.append(MxHost(host, root, own["THIS_HOST_NAME"]))
        for host in mx:
            host.receiver = systemd.start(receiver_unit, host.root, spawn=host.host.popen)
            host.webhooks = systemd.start(webhooks_unit, host.root, spawn=host.host.popen)
            services += [host.receiver, host.webhooks]
        api = systemd.start(api_unit, mx[0].root, spawn=mx[0].host.popen)
        services.append(api)
        haproxy = _haproxy(mx[0].host, mx[0].root, values)
        built = Fleet(
            lan, mx, store_host, internet, token, domain, api, haproxy,
            mx[0].root.directory / "journal" / "haproxy.log", values, base, services,
        )  # fmt: skip
        for service in services:
            stack.callback(netns.end, service.process)
        stack.callback(netns.end, haproxy)
        deadline = time.monotonic() + 60
        while set(built.servers().values()) != {"UP"} or len(built.servers()) != len(mx):
            dead = [s for s in services if s.process.poll() is not None]
            assert not dead and haproxy.poll() is None, built.logs()
            assert time.monotonic() < deadline, (built.servers(), built.logs())
            time.sleep(0.25)
        while not all(built.ready(f"http://{host.address}:8027/readyz") for host in mx):
            dead = [s for s in services if s.process.poll() is not None]
            assert not dead, built.logs()
            assert time.monotonic() < deadline, built.logs()
            time.sleep(0.25)
        yield built
