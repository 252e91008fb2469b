"""`floodgate run`: the all-in-one supervisor (embedded store unless a URI is set, receiver,
API, webhook dispatcher).

Each part runs as its own process, as in production, so an overloaded API cannot slow the
receiver. A part that dies is restarted with backoff; one that keeps dying stops the run.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import FrameType

import processes
from floodgate.errors import CONFIG_ERROR
from floodgate.settings import Settings, cannot_bind, parse_hostport
from mailstore.embedded import EmbeddedStore
from receiver.smtp.tls import SELF_SIGNED

POLL = 0.2
STARTUP_TIMEOUT = 60.0


def admin_token(settings: Settings) -> tuple[str, bool]:
    """The configured token, else the one in `<data_dir>/admin-token`, else a new one."""
    configured = settings.admin_token_value()
    if configured:
        return configured, False
    path = settings.data_dir / "admin-token"
    if path.exists():
        existing = path.read_text().strip()
        if existing:
            return existing, False
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True


@dataclass
class Child:
    """One supervised `floodgate <role>` process, restarted under the one restart policy."""

    role: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: processes.RestartBudget = field(default_factory=processes.RestartBudget)

    def start(self) -> None:
        self.process = processes.spawn([sys.executable, "-m", "floodgate", self.role], env=self.env)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def may_restart(self) -> bool:
        return self.restarts.died()

    def stop(self, timeout: float) -> None:
        if self.process is not None:
            processes.stop(self.process, timeout)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: EmbeddedStore | None = None
        self.children: list[Child] = []
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        busy = self._busy_addresses()
        if busy:  # one clear line each, before anything starts (no restart loop)
            for line in busy:
                print(f"floodgate: {line}", file=sys.stderr, flush=True)
            return CONFIG_ERROR
        uri = self.settings.mongodb_uri or self._start_store()
        token, created = admin_token(self.settings)
        env = {**os.environ, "FLOODGATE_MONGODB_URI": uri, "FLOODGATE_ADMIN_TOKEN": token}
        self.children = [Child("receiver", env), Child("api", env), Child("webhooks", env)]
        try:
            for child in self.children:
                child.start()
            if not self._wait_healthy() or not self._wait_store():
                return 0 if self.stopping else 1  # told to stop while starting: a clean stop
            self._banner(uri, token, created)
            return self._watch()
        finally:
            self._shutdown()

    def _wait_healthy(self, timeout: float = STARTUP_TIMEOUT) -> bool:
        """Wait until every child answers /healthz; False if one exits or time runs out."""
        urls = [
            "http://{}:{}/healthz".format(*parse_hostport(self.settings.receiver_http_listen)),
            "http://{}:{}/healthz".format(*parse_hostport(self.settings.api_listen)),
            "http://{}:{}/healthz".format(*parse_hostport(self.settings.webhooks_http_listen)),
        ]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            for child in self.children:
                if child.exited() is not None:
                    print(f"floodgate: {child.role} exited during start-up; stopping")
                    return False
            if all(answers(url) for url in urls):
                return True
            time.sleep(POLL)
        if not self.stopping:
            print("floodgate: start-up timed out")
        return False

    def _busy_addresses(self) -> list[str]:
        """Listen addresses something else already holds."""
        busy = []
        for variable, value in (
            ("FLOODGATE_SMTP_LISTEN", self.settings.smtp_listen),
            ("FLOODGATE_API_LISTEN", self.settings.api_listen),
            ("FLOODGATE_RECEIVER_HTTP_LISTEN", self.settings.receiver_http_listen),
            ("FLOODGATE_WEBHOOKS_HTTP_LISTEN", self.settings.webhooks_http_listen),
        ):
            error = cannot_bind(*parse_hostport(value))
            if error is not None:
                busy.append(f"{variable}={value}: cannot listen there: {error.strerror}")
        return busy

    def _wait_store(self, timeout: float = STARTUP_TIMEOUT) -> bool:
        """Wait until the receiver says the store takes writes; say why once if it waits."""
        url = "http://{}:{}/readyz".format(*parse_hostport(self.settings.receiver_http_listen))
        deadline = time.monotonic() + timeout
        said = False
        while time.monotonic() < deadline and not self.stopping:
            ready, reason = _readiness(url)
            if ready:
                return True
            if not said and time.monotonic() > deadline - timeout + 5:
                print(f"floodgate: waiting for the store: {reason}", flush=True)
                said = True
            if any(child.exited() is not None for child in self.children):
                return self._wait_healthy(timeout=0.1)
            time.sleep(POLL)
        if not self.stopping:
            print(f"floodgate: the store does not take writes: {_readiness(url)[1]}; stopping")
        return False

    def _start_store(self) -> str:
        self.store = EmbeddedStore(self.settings.data_dir / "store")
        uri = self.store.start()
        print(f"floodgate: embedded store (nx-27017) at {uri}", flush=True)
        return uri

    def _watch(self) -> int:
        while not self.stopping:
            time.sleep(POLL)
            if self.store is not None and not self.store.alive():
                print("floodgate: embedded store exited; restarting it", flush=True)
                self.store.start()  # same port: the children's URI stays valid
            for child in self.children:
                code = child.exited()
                if code is None or self.stopping:
                    continue
                if code == CONFIG_ERROR:  # restarting cannot fix a bad setting or a busy port
                    print(f"floodgate: {child.role} cannot start (see above); stopping")
                    return 1
                if not child.may_restart():
                    print(f"floodgate: {child.role} keeps exiting (last code {code}); stopping")
                    return 1
                print(f"floodgate: {child.role} exited with {code}; restarting", flush=True)
                time.sleep(child.restarts.policy.delay)
                child.start()
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace + 5
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            child.stop(grace)
        if self.store is not None:
            self.store.stop()
        print("floodgate: stopped", flush=True)

    def _banner(self, uri: str, token: str, created: bool) -> None:
        smtp_host, smtp_port = parse_hostport(self.settings.smtp_listen)
        api_host, api_port = parse_hostport(self.settings.api_listen)
        domain = sorted(self.settings.domain_set)[0]
        where = self.settings.data_dir / "admin-token"
        token_note = f"(new, saved to {where})" if created else ""
        api = f"http://{api_host}:{api_port}"
        hooks = "http://{}:{}".format(*parse_hostport(self.settings.webhooks_http_listen))
        print(
            f"""
Floodgate is running.
  SMTP      {smtp_host}:{smtp_port}   accepting mail for: {self.settings.domains}
  STARTTLS  {self._tls_note()}
  API       {api}   (web inbox {api}/, console {api}/console, docs {api}/docs)
  webhooks  dispatcher metrics at {hooks}/metrics; register one with
            floodgate webhook add https://your.example/hook --match hello@{domain}
  token     {token} {token_note}

Send a first message:
  swaks --server {smtp_host}:{smtp_port} --to hello@{domain} --from you@example.org
  python3 -c "import smtplib; smtplib.SMTP('{smtp_host}', {smtp_port}, local_hostname='me.test')\\
.sendmail('you@example.org', ['hello@{domain}'], b'Subject: hi\\r\\n\\r\\nhello\\r\\n')"
Read it:
  curl -H 'Authorization: Bearer {token}' {api}/v1/mailboxes/hello@{domain}/messages
Stop with Ctrl-C.
""",
            flush=True,
        )

    def _tls_note(self) -> str:
        settings = self.settings
        if not settings.starttls:
            return "off (FLOODGATE_STARTTLS=false)"
        if settings.tls_cert is not None:
            return f"on, certificate {settings.tls_cert}"
        path = settings.data_dir / "tls" / SELF_SIGNED
        return (
            f"on, self-signed certificates (RSA, ECDSA) for {settings.smtp_hostname} in "
            f"{path.parent}/ (FLOODGATE_TLS_CERT for a real one)"
        )


def _readiness(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own URL
            return True, response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as error:  # 503 with the reason in the body
        return False, error.read().decode(errors="replace").strip()
    except OSError as error:
        return False, str(error)


def answers(url: str) -> bool:
    """Whether `url` (one of our health or readiness URLs) answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own http URL
            return bool(response.status == 200)
    except OSError:
        return False


def main(settings: Settings) -> int:
    return Supervisor(settings).run()
