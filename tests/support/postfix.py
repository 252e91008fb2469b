"""A private Postfix instance for tests: a real sending MTA at its defaults.

Never the host's Postfix: its own configuration, queue and data directories, its own
master.cf with one smtpd on a free 127.0.0.1 port (for the test to submit mail) and no
port 25, its own log file (postlogd, `maillog_file`) instead of syslog. main.cf holds only
what makes it private and points it at the receiver; everything else is Postfix's
default, which is the point: a sender at its defaults must be served.

Started with `postfix -c <dir> start` (as root, like any Postfix), stopped with
`postfix -c <dir> stop`; if its master outlives that, it alone is ended, by the PID in
its own pid file.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.processes import free_port

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
# tests/install-tools.sh installs Postfix only when asked: the host is not ours.
POSTFIX_MISSING = "postfix is not installed: FLOODGATE_INSTALL_TOOLS=1 make test installs it"
MAIL_OWNER = "postfix"  # Postfix's default mail_owner; Debian's package creates the user
HOSTNAME = "sender.test"

# Only the services a relaying client needs; no `local` (nothing is delivered here), no
# port 25, chroot off (column 5: no copy of /etc inside the queue directory).
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
showq     unix  n       -       n       -       -       showq
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_STATUS = re.compile(r"\bto=<[^>]*>.*?\bstatus=(\w+) \((.*)\)$")


def require_postfix() -> None:
    """Skip the calling test when Postfix is not installed."""
    if not (os.path.exists(POSTFIX) and os.path.exists(POSTQUEUE)):
        pytest.skip(POSTFIX_MISSING)
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its daemons run as 'postfix')")
    try:
        pwd.getpwnam(MAIL_OWNER)
    except KeyError:
        pytest.skip(f"no '{MAIL_OWNER}' user: {POSTFIX_MISSING}")


def main_cf(root: Path, data_dir: Path, settings: Mapping[str, str]) -> str:
    """main.cf: privacy first (own directories, loopback only, no DNS), then `settings`."""
    base = {
        "compatibility_level": "3.6",
        "queue_directory": str(root / "queue"),
        "data_directory": str(data_dir),
        # postlogd writes only under an allowed prefix (default "/var, /dev/stdout").
        "maillog_file": str(root / "maillog"),
        "maillog_file_prefixes": str(root),
        "myhostname": HOSTNAME,
        # Nothing is local: every domain, mx.test included, goes to the relayhost.
        "mydestination": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        # No reverse lookup of the submitting client: no DNS packet leaves loopback.
        "smtpd_peername_lookup": "no",
        # Nothing is delivered locally, so no alias table: the default names the host's
        # /etc/aliases and NIS, which smtpd would otherwise open (and log about).
        "alias_maps": "",
    }
    base.update(settings)
    return "".join(f"{name} = {value}\n" for name, value in base.items())


@dataclass
class PrivatePostfix:
    """One running private Postfix; `port` is its submission smtpd on 127.0.0.1."""

    root: Path
    data_dir: Path
    port: int
    started: bool = field(default=False, init=False)

    @property
    def config_dir(self) -> Path:
        return self.root / "conf"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> None:
        # `postfix start` runs `post-install create-missing` (postfix-script check-fatal),
        # which creates the queue's subdirectories with Postfix's owners and modes.
        result = self._postfix("start")
        self.started = result.returncode == 0
        if not self.started:
            raise RuntimeError(f"private postfix did not start:\n{result.stderr}\n{self.log()}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.started:
            self._postfix("stop")
            self.started = False
        pid = self.master_pid()
        if pid is None:
            return
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and self._our_master(pid):
            time.sleep(0.1)
        if self._our_master(pid):
            os.kill(pid, signal.SIGKILL)  # this instance's master only, by its own pid file

    def _our_master(self, pid: int) -> bool:
        """True while `pid` is a live master of this instance: not a zombie, and working
        in this queue directory (a recycled pid, or the host's master, is not)."""
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (OSError, IndexError):
            return False
        return state != "Z" and Path(cwd) == self.queue_dir.resolve()

    # -- submitting ------------------------------------------------------------------

    def smtp(self, timeout: float = 30.0) -> smtplib.SMTP:
        """An SMTP session with this instance's submission smtpd (loopback: relay allowed)."""
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=timeout)

    # -- the queue -------------------------------------------------------------------

    def queue(self) -> list[dict[str, object]]:
        """The queue as `postqueue -j` reports it: one dict per queued message."""
        result = subprocess.run(
            [POSTQUEUE, "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """`postqueue -f`: try deferred mail now instead of after queue_run_delay."""
        subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-f"], timeout=30, check=True)

    def wait_settled(self, timeout: float) -> list[dict[str, object]]:
        """Poll until every message is delivered or deferred, or `timeout` passes; returns
        what is left in the queue. Deferred mail is a final answer for a test: Postfix
        retries it only after minimal_backoff_time (300 s by default)."""
        deadline = time.monotonic() + timeout
        left = self.queue()
        while _in_flight(left) and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self.queue()
        return left

    # -- the log ---------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def deliveries(self) -> list[tuple[str, str]]:
        """(status, reason) of every delivery attempt per recipient: sent, deferred, ..."""
        found = []
        for line in self.log().splitlines():
            if "/smtp[" not in line and "/error[" not in line and "/discard[" not in line:
                continue
            match = _STATUS.search(line)
            if match:
                found.append((match.group(1), match.group(2)))
        return found

    def statuses(self) -> Counter[str]:
        """How many recipient deliveries ended in each status (sent, deferred, bounced)."""
        return Counter(status for status, _ in self.deliveries())

    def reasons(self, status: str) -> Counter[str]:
        """The server replies (or errors) behind one status, most common first."""
        return Counter(_reply_class(reason) for s, reason in self.deliveries() if s == status)


def _in_flight(queue: list[dict[str, object]]) -> bool:
    """True while some message is still being tried (not yet deferred or on hold)."""
    return any(entry.get("queue_name") not in ("deferred", "hold") for entry in queue)


def _reply_class(reason: str) -> str:
    """A delivery reason reduced to what matters when counting: the server's reply
    (`421 4.7.0 Too many connections ...`), or Postfix's own words without addresses.
    Recipients Postfix deferred without trying, having suspended the destination after
    such a reply, say so."""
    suspended = "delivery temporarily suspended: " if "suspended" in reason else ""
    reply = re.search(r"\b([45]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3}) ([^(]{0,48})", reason)
    if reply:
        return suspended + " ".join(reply.groups()).strip()
    return re.sub(r"\[[^\]]*\]|:\d+|\b[0-9A-F]{8,}\b", "", reason)[:80]


@contextmanager
def private_postfix(root: Path, **settings: str) -> Iterator[PrivatePostfix]:
    """Start a private Postfix under `root` with main.cf `settings` on top of the
    privacy settings; stop it (and only it) on the way out."""
    require_postfix()
    root.mkdir(parents=True, exist_ok=True)
    (root / "conf").mkdir(exist_ok=True)
    # `postfix` chdirs to the queue directory before anything else; post-install creates
    # what is inside it.
    (root / "queue").mkdir(mode=0o755, exist_ok=True)
    # The master opens data_directory/master.lock as the mail owner, who cannot pass
    # through pytest's 0700 directories; the data directory alone lives beside them,
    # owned by that user, and goes when the instance does.
    data_dir = Path(tempfile.mkdtemp(prefix="floodgate-postfix-data-"))
    owner = pwd.getpwnam(MAIL_OWNER)
    os.chown(data_dir, owner.pw_uid, owner.pw_gid)
    port = free_port()
    (root / "conf" / "main.cf").write_text(main_cf(root, data_dir, settings))
    (root / "conf" / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))
    instance = PrivatePostfix(root, data_dir, port)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
