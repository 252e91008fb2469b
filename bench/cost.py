"""The receiver's cost in instructions, under callgrind: per stored message (one connection
each, 1 KB) and per refusal at the per-client cap.

CPU seconds on a shared 2-core machine move with whatever else runs; instructions counted
by valgrind's callgrind do not (the same binary, inputs and environment give the same count
within a few per cent). So a change to the receiver's hot paths is judged here, before and
after, in one run on one machine, whatever its load: `python -m bench cost` in each
checkout (the script needs nothing of the checkout but `floodgate receiver`).

A receiver runs under `valgrind --tool=callgrind` against an embedded store (outside
valgrind); after a warm-up, the counters are zeroed, a phase runs (messages, then refusals),
and the counters are dumped (`callgrind_control`). A phase's count includes the receiver's
periodic jobs over its few seconds, the same for every checkout.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import embedded_store, free_port

MESSAGES = 200
REFUSALS = 500


def run(quick: bool = False) -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return {"skipped": "valgrind is not installed (Debian: valgrind)"}
    messages, refusals = (20, 50) if quick else (MESSAGES, REFUSALS)
    with (
        tempfile.TemporaryDirectory(prefix="floodgate-cost-") as tmp,
        embedded_store(Path(tmp)) as uri,
    ):
        work = Path(tmp)
        smtp, http = free_port(), free_port()
        process = _receiver(work, uri, smtp, http)
        try:
            _wait_ready(http, process)
            _send(smtp, 10, "warm")
            _refuse(smtp, 10)
            counts = {
                "messages": _phase(process, work, "messages", lambda: _send(smtp, messages, "m")),
                "refusals": _phase(process, work, "refusals", lambda: _refuse(smtp, refusals)),
            }
        finally:
            process.terminate()
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return {
        "messages": messages,
        "refusals": refusals,
        "instructions_per_message": round(counts["messages"] / messages),
        "instructions_per_refusal": round(counts["refusals"] / refusals),
    }


def _receiver(work: Path, uri: str, smtp: int, http: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOODGATE_")}
    env.update(
        {
            "FLOODGATE_MONGODB_URI": uri,
            "FLOODGATE_DATA_DIR": str(work / "data"),
            "FLOODGATE_SMTP_LISTEN": f"127.0.0.1:{smtp}",
            "FLOODGATE_RECEIVER_HTTP_LISTEN": f"127.0.0.1:{http}",
            "FLOODGATE_IDLE_TIMEOUT": "600",
            "FLOODGATE_STORE_TIMEOUT": "30",  # valgrind is some 50 times slower
            "FLOODGATE_MESSAGE_RATE": "0",
            "FLOODGATE_CONNECTION_RATE": "0",
            "FLOODGATE_STARTTLS": "false",
            "FLOODGATE_MAX_CONNECTIONS_PER_IP": "1",
            "FLOODGATE_AUTOBAN_REFUSAL_THRESHOLD": "0",
            "FLOODGATE_MAILBOX_MAX_MESSAGES": "0",
            "FLOODGATE_LOG_LEVEL": "WARNING",
        }
    )
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={work / 'callgrind.out'}.%p",
        sys.executable,
        "-m",
        "floodgate",
        "receiver",
    ]
    log = (work / "receiver.log").open("wb")
    return subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(http: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600  # imports under valgrind take a while
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the receiver exited under valgrind")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError("the receiver did not get ready under valgrind")


def _send(port: int, count: int, tag: str) -> None:
    body = "x" * 900
    for n in range(count):  # one connection per message, as an MTA delivers to an MX
        with smtplib.SMTP("127.0.0.1", port, local_hostname="c.test", timeout=120) as client:
            client.sendmail(
                "a@sender.test", [f"box{n % 50}@mx.test"], f"Subject: {tag} {n}\r\n\r\n{body}\r\n"
            )


def _refuse(port: int, count: int) -> None:
    holder = socket.create_connection(("127.0.0.1", port))  # the one slot of the client
    holder.recv(100)
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as refused:
            refused.recv(100)  # 421 at the per-client cap
    holder.close()


def _phase(process: subprocess.Popen[bytes], work: Path, name: str, action: Any) -> int:
    pid = str(process.pid)
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
    action()
    time.sleep(2)  # the last replies' work done
    subprocess.run(["callgrind_control", f"--dump={name}", pid], check=True, capture_output=True)
    for path in sorted(work.glob("callgrind.out.*")):
        text = path.read_text(errors="replace")
        if f"desc: Trigger: dump {name}\n" in text:
            for line in text.splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise RuntimeError(f"no callgrind dump for {name}")


def markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"### Cost in instructions\n\nSkipped: {result['skipped']}\n"
    return (
        "### Cost in instructions (callgrind)\n\n"
        "| measure | instructions |\n| --- | ---: |\n"
        f"| per stored message, one connection each, 1 KB ({result['messages']}) | "
        f"{result['instructions_per_message']:,} |\n"
        f"| per refusal at the per-client cap ({result['refusals']}) | "
        f"{result['instructions_per_refusal']:,} |\n"
    )
