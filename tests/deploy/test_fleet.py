"""The deploy files as shipped, run as a fleet: an operator following deploy/README.md.

Hosts are network namespaces on a LAN of their own (tests/support/netns.py): `mx1`
(10.0.1.11: HAProxy on :25 with deploy/haproxy.cfg, a receiver, the API), `mx2`
(10.0.2.11: a receiver of two worker processes, FLOODGATE_WORKERS=2 as the example tells a
dedicated host to set its core count), `store` (10.0.3.11: the embedded store standing in
for the replica set; also where Prometheus and the operator stand) and `internet`
(10.0.9.x: senders).
The files get README's placeholders filled in and nothing else (tests/support/fleet.py);
the units run as systemd would run them (tests/support/systemd.py): their environment,
their dynamic user, their state directory, their credentials (a certificate whose key only
root may read). Everything is ended by pid and the namespaces deleted, however a test ends.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import netns
from tests.support.fleet import DEPLOY, Fleet, common_name, fill, fleet
from tests.support.processes import HAPROXY_MISSING
from tests.support.smtp import RawClient, queued_id, send_message, wait_for
from tests.support.systemd import environment_file
from tests.webhooks.hookserver import hook_server
from tests.webhooks.test_signing import verify

CHECK_INTERVAL = 2.0  # haproxy.cfg's default, which the fleet keeps


@pytest.fixture(scope="module")
def shipped() -> Iterator[Fleet]:
    if shutil.which("haproxy") is None:
        pytest.skip(HAPROXY_MISSING)
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"the fleet needs network namespaces: {reason}")
    with fleet(workers=(1, 2)) as built:
        yield built


def through_haproxy(fleet: Fleet, client: str) -> RawClient:
    host, port = fleet.smtp
    raw: RawClient = fleet.internet.call(RawClient, host, port, source=client, timeout=15)
    return raw


def metric(fleet: Fleet, address: str, name: str, **labels: str) -> float:
    """One receiver's sample, summed over its workers, from where Prometheus scrapes it."""
    text = fleet.get(f"http://{address}:8026/metrics").text
    return sum(
        item.value
        for family in text_string_to_metric_families(text)
        for item in family.samples
        if item.name == name and all(item.labels.get(k) == v for k, v in labels.items())
    )


def test_haproxy_sees_every_receiver_up_through_the_shipped_checks(shipped: Fleet) -> None:
    assert shipped.servers() == {"mx1": "UP", "mx2": "UP"}
    # HAProxy holds :25 of every address of mx1, the receiver beside it 10.0.1.11:2525.
    for host in shipped.mx:
        assert host.receiver is not None
        assert f"smtp={host.address}:2525 http={host.address}:8026" in host.receiver.log()
        ready = shipped.get(f"http://{host.address}:8026/readyz")
        assert (ready.status_code, ready.text.strip()) == (200, "ready")
    # Nothing fights over port 25: HAProxy has it on every address of mx1, the receiver
    # beside it has 2525 of the private address, the API 8025.
    listening = (
        shipped.mx[0]
        .host.call(subprocess.run, ["ss", "-ltnH"], capture_output=True, text=True, timeout=10)
        .stdout
    )
    sockets = {line.split()[3] for line in listening.splitlines()}
    assert {"0.0.0.0:25", "10.0.1.11:2525", "10.0.1.11:8026", "10.0.1.11:8025"} <= sockets


def test_mail_through_haproxy_is_stored_under_the_real_client_address(shipped: Fleet) -> None:
    before = {h.address: metric(shipped, h.address, "floodgate_messages_total") for h in shipped.mx}
    sent = {}
    for n in range(1, 9):
        client = f"10.0.9.{n}"
        smtp = through_haproxy(shipped, client)
        assert smtp.hello().code == 250
        body = f"Subject: fleet {n}\r\n\r\nfrom {client}\r\n".encode()
        reply = send_message(smtp, "sender@example.org", [f"box@{shipped.domain}"], body)
        assert reply.code == 250, reply
        sent[queued_id(reply.text)] = client
        smtp.close()
    for message_id, client in sent.items():
        document = shipped.admin("GET", f"/v1/messages/{message_id}")
        assert document.status_code == 200, document.text
        assert document.json()["peer_ip"] == client
    after = {h.address: metric(shipped, h.address, "floodgate_messages_total") for h in shipped.mx}
    # leastconn spreads sequential sessions over both: each MX host stored some of them.
    assert all(after[a] > before[a] for a in after), (before, after)


def test_starttls_presents_each_hosts_own_certificate_from_a_root_only_key(
    shipped: Fleet,
) -> None:
    """README step 7: the key is root's only (0600), the receiver runs as a user of its
    own, and the tls.conf drop-in hands it the files through LoadCredential=."""
    for host in shipped.mx:
        key = host.root.path("/etc/floodgate/tls/key.pem")
        assert key.stat().st_uid == 0 and key.stat().st_mode & 0o777 == 0o600
        assert host.receiver is not None and host.receiver.uid != 0
    names = set()
    for n in range(20, 26):  # leastconn alternates: both hosts answer
        smtp = through_haproxy(shipped, f"10.0.9.{n}")
        assert smtp.hello().code == 250
        assert smtp.starttls().code == 220
        names.add(common_name(smtp.sock.getpeercert(binary_form=True)))  # type: ignore[attr-defined]
        smtp.close()
    assert names == {"mx1.example.net", "mx2.example.net"}


def test_a_ban_made_through_the_api_is_enforced_by_both_mx_hosts(shipped: Fleet) -> None:
    banned = "10.0.9.30"
    made = shipped.admin("POST", "/v1/blocklist", json={"cidr": banned, "reason": "fleet"})
    assert made.status_code == 201, made.text
    deadline = time.monotonic() + 10
    while True:
        refused = {
            h.name: metric(shipped, h.address, "floodgate_refusals_total", reason="blocked")
            for h in shipped.mx
        }
        if all(refused.values()):
            break
        assert time.monotonic() < deadline, refused
        reply = through_haproxy(shipped, banned).reply()
        if (reply.code, reply.text[:5]) != (554, "5.7.1"):
            assert time.monotonic() < deadline - 8, reply  # only while the ban travels
        time.sleep(0.1)
    assert through_haproxy(shipped, "10.0.9.31").reply().code == 220  # others are served


def test_a_client_behind_haproxy_is_capped_by_its_own_address(shipped: Fleet) -> None:
    """Every connection reaches the receivers from HAProxy's address, yet the cap
    (FLOODGATE_MAX_CONNECTIONS_PER_IP, the env example's 30 per host) counts the client
    the PROXY header names: one client holds 30 on each MX host, no more, and another
    client is still served."""
    example = environment_file(DEPLOY / "floodgate.env.example")
    cap = int(example["FLOODGATE_MAX_CONNECTIONS_PER_IP"])
    held = [through_haproxy(shipped, "10.0.9.35") for _ in range(2 * cap)]
    assert all(client.reply().code == 220 for client in held)  # leastconn: cap on each
    refused = through_haproxy(shipped, "10.0.9.35").reply()
    assert (refused.code, refused.text[:5]) == (421, "4.7.0")
    assert through_haproxy(shipped, "10.0.9.36").reply().code == 220
    for client in held:
        client.close()


def test_promtool_accepts_prometheus_yml_and_every_target_answers(
    shipped: Fleet, tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (Debian: prometheus); CI installs it")
    rendered = tmp_path / "prometheus.yml"
    shipped_config = DEPLOY / "prometheus" / "prometheus.yml"
    rendered.write_text(fill(shipped_config.read_text(), shipped.values))
    (tmp_path / "alerts.yml").symlink_to(DEPLOY / "prometheus" / "alerts.yml")
    for config in (shipped_config, rendered):
        check = subprocess.run(
            [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
    targets = [
        target
        for job in yaml.safe_load(rendered.read_text())["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    ]
    assert len(targets) == 5  # two receivers, the API and two webhook dispatchers
    for target in targets:
        answer = shipped.get(f"http://{target}/metrics")  # from the Prometheus host
        assert answer.status_code == 200 and "floodgate_" in answer.text, target


def test_two_dispatchers_post_each_message_once_and_one_carries_on_alone(shipped: Fleet) -> None:
    """Both MX hosts run floodgate-webhooks.service as shipped. Each message to a hooked
    mailbox is POSTed once, signed (both dispatchers see it; one claims its delivery), to an
    endpoint on the Internet; with mx1's dispatcher stopped, mx2's sends the next alone."""
    box = f"hooked@{shipped.domain}"
    with hook_server([], address="10.0.9.40", inside=shipped.internet.call) as hook:
        created = shipped.admin("POST", "/v1/webhooks", json={"url": hook.url, "match": box})
        assert created.status_code == 201, created.text
        webhook = created.json()
        sent = []
        for n in range(2):
            if n == 1:
                stopped = shipped.mx[0].webhooks
                assert stopped is not None
                netns.end(stopped.process)
            smtp = through_haproxy(shipped, f"10.0.9.{20 + n}")
            assert smtp.hello().code == 250
            body = f"Subject: sign-up {n}\r\n\r\nYour code is 73920{n}.\r\n".encode()
            reply = send_message(smtp, "shop@example.org", [box], body)
            assert reply.code == 250, reply
            sent.append(queued_id(reply.text))
            smtp.close()
            assert hook.wait(n + 1, 30), shipped.logs()

        def delivered() -> list[dict[str, Any]]:
            path = f"/v1/webhooks/{webhook['id']}/deliveries"
            found: list[dict[str, Any]] = shipped.admin("GET", path).json()["deliveries"]
            return found

        assert wait_for(lambda: [d["state"] for d in delivered()] == ["delivered"] * 2, 20)
        time.sleep(2)  # a copy sent by the second dispatcher would have come by now
        received = list(hook.received)
    assert sorted(json.loads(r.body)["data"]["id"] for r in received) == sorted(sent)
    assert len({r.headers["webhook-id"] for r in received}) == 2
    assert all(verify(webhook["secret"], r.headers, r.body) for r in received)
    final = delivered()
    assert [d["attempts"] for d in final] == [1, 1], (final, shipped.logs())


def test_a_killed_receiver_is_marked_down_within_two_checks_and_mail_flows_on(
    shipped: Fleet,
) -> None:
    """The last test of the module: it leaves mx2 without its receiver."""
    lost = shipped.mx[1].receiver
    assert lost is not None
    lost.process.send_signal(signal.SIGKILL)
    # Dead, not dying: a connection the kernel accepts while the process is being torn
    # down is reset mid-session (the sender retries, as SMTP provides); from here on every
    # connection to mx2 is refused, and HAProxy redispatches it.
    lost.process.wait(10)
    killed = time.monotonic()
    marked_down = None
    codes = []
    n = 0
    while time.monotonic() - killed < 2 * CHECK_INTERVAL + 3:
        n += 1
        smtp = through_haproxy(shipped, f"10.0.9.{n % 8 + 10}")
        try:
            assert smtp.hello().code == 250
            body = f"Subject: after the kill {n}\r\n\r\nx\r\n".encode()
            reply = send_message(smtp, "s@example.org", [f"box@{shipped.domain}"], body)
        except (AssertionError, OSError) as error:
            raise AssertionError(f"{error}; {time.monotonic() - killed:.2f}s after the kill\n"
                                 + shipped.logs()) from error  # fmt: skip
        codes.append(reply.code)
        smtp.close()
        if marked_down is None and shipped.servers().get("mx2", "").startswith("DOWN"):
            marked_down = time.monotonic() - killed
    assert codes and set(codes) == {250}, codes  # redispatched to mx1 until marked down
    assert marked_down is not None and marked_down <= 2 * CHECK_INTERVAL + 1.5, marked_down
    assert shipped.servers() == {"mx1": "UP", "mx2": "DOWN"}
