"""A systemd unit's service started the way systemd would start it, where systemd does not run.

Read from the unit file and its drop-ins (`<unit>.d/*.conf` beside it, in name order, as
systemd reads them) and applied:

- `ExecStart=` (one command, no prefixes), run with the working directory `/`;
- the environment: systemd's own (`PATH`, `HOME`, `USER`, `INVOCATION_ID`,
  `STATE_DIRECTORY`, `CREDENTIALS_DIRECTORY`), then `Environment=` (quoting and specifiers
  resolved), then `EnvironmentFile=`, which wins over `Environment=` (systemd.exec(5));
- `DynamicUser=yes`: a uid of systemd's dynamic range that no account and no process has;
- `StateDirectory=` with `StateDirectoryMode=`, made and owned by that uid;
- `LoadCredential=ID:PATH`: the file read as root and copied into the credentials
  directory (`%d`), readable by the service's uid only; a missing file fails the start;
- `AmbientCapabilities=`, `CapabilityBoundingSet=`, `NoNewPrivileges=` (through setpriv),
  `LimitNOFILE=` (through prlimit, up to this machine's hard limit), `UMask=`.

The rest (ProtectSystem=, SystemCallFilter=, ...) is what `systemd-analyze verify` checks;
it is not applied here.

Paths: a unit names a production host's paths. `Root` maps them into a directory of the
test, that host's file system: `/etc`, `/var/lib` and `/run` lie under it, and
`/opt/floodgate` (where deploy/README.md clones the project, `make install` making
`/opt/floodgate/.venv`) is this checkout, whose `make setup` made `.venv`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
INSTALLED = "/opt/floodgate"
MAPPED = ("/etc/", "/var/lib/", "/run/")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DYNAMIC_UIDS = range(61184, 65520)  # systemd's DynamicUser= range
Spawn = Callable[..., "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class Root:
    """A host's file system as the test lays it out (see the module docstring)."""

    directory: Path

    def path(self, production: str) -> Path:
        """Where a production path lies for this host."""
        if production == INSTALLED or production.startswith(INSTALLED + "/"):
            return CHECKOUT / production[len(INSTALLED) :].lstrip("/")
        if production.startswith(MAPPED):
            return self.directory / production.lstrip("/")
        return Path(production)

    def value(self, text: str) -> str:
        """An environment value: a production path in it is mapped, anything else kept."""
        return str(self.path(text)) if text.startswith((INSTALLED, *MAPPED)) else text

    def write(self, production: str, text: str, mode: int = 0o600) -> Path:
        """A file at a production path, owned by root (as `install -D -m 600` makes it)."""
        target = self.path(production)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
        return target


@dataclass
class Unit:
    """The [Service] settings of a unit file and its drop-ins, in the order systemd reads."""

    path: Path
    settings: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path, dropins: tuple[Path, ...] | None = None) -> Unit:
        """The unit at `path` with `dropins` (default: those installed beside it)."""
        unit = cls(path)
        if dropins is None:
            dropins = tuple(sorted((path.parent / f"{path.name}.d").glob("*.conf")))
        for source in (path, *dropins):
            unit.settings += _service_section(source.read_text())
        return unit

    @property
    def name(self) -> str:
        return self.path.name

    def values(self, key: str) -> list[str]:
        """Every value of a list setting; an empty assignment resets the list (systemd)."""
        found: list[str] = []
        for name, value in self.settings:
            if name == key:
                found = [] if value == "" else [*found, value]
        return found

    def value(self, key: str, default: str | None = None) -> str | None:
        values = self.values(key)
        return values[-1] if values else default


def _service_section(text: str) -> list[tuple[str, str]]:
    settings = []
    section = ""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):  # a continuation line
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service":
            key, sep, value = line.partition("=")
            assert sep, f"not a setting: {line!r}"
            settings.append((key.strip(), value.strip()))
    return settings


def environment_file(path: Path) -> dict[str, str]:
    """Variables as systemd's EnvironmentFile= reads them: KEY=VALUE lines; blank lines and
    lines starting with # or ; ignored; a value in matching quotes loses them; nothing
    after a value is a comment. Anything else fails here, as it would fail there."""
    variables = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip().isidentifier(), f"systemd cannot read: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        variables[key.strip()] = value
    return variables


@dataclass
class Service:
    """A unit's main process, started as systemd would."""

    unit: Unit
    process: subprocess.Popen[bytes]
    uid: int
    environment: dict[str, str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Prepared:
    """What systemd does before ExecStart runs: the user, the directories, the credentials,
    the environment; `argv` then starts the main process under it."""

    def __init__(self, unit: Unit, root: Root) -> None:
        self.unit, self.root = unit, root
        self.uid = _dynamic_uid() if unit.value("DynamicUser") == "yes" else 0
        stem = unit.name.removesuffix(".service")
        self.credentials = root.path(f"/run/credentials/{unit.name}")
        self.specifiers = {"d": str(self.credentials), "n": unit.name, "N": stem, "%": "%"}
        self.environment = {
            "PATH": DEFAULT_PATH,
            "HOME": "/",
            "USER": stem,
            "LOGNAME": stem,
            "INVOCATION_ID": secrets.token_hex(16),
        }
        self._state_directories()
        self._credentials()
        for line in unit.values("Environment"):
            for word in shlex.split(self._specifiers(line)):
                key, _, value = word.partition("=")
                self.environment[key] = root.value(value)
        for line in unit.values("EnvironmentFile"):
            optional = line.startswith("-")
            path = root.path(line.removeprefix("-"))
            if optional and not path.exists():
                continue
            for key, value in environment_file(path).items():
                self.environment[key] = root.value(value)

    def _specifiers(self, text: str) -> str:
        out, rest = "", text
        while "%" in rest:
            before, _, rest = rest.partition("%")
            letter, rest = rest[:1], rest[1:]
            assert letter in self.specifiers, f"{self.unit.name}: specifier %{letter} unknown here"
            out += before + self.specifiers[letter]
        return out + rest

    def _state_directories(self) -> None:
        mode = int(self.unit.value("StateDirectoryMode", "0755") or "0755", 8)
        names = [n for value in self.unit.values("StateDirectory") for n in value.split()]
        for name in names:
            directory = self.root.path(f"/var/lib/{name}")
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, self.uid, self.uid)
            directory.chmod(mode)
        if names:
            self.environment["STATE_DIRECTORY"] = ":".join(
                str(self.root.path(f"/var/lib/{n}")) for n in names
            )

    def _credentials(self) -> None:
        loads = self.unit.values("LoadCredential")
        if not loads:
            return
        self.credentials.mkdir(parents=True, exist_ok=True)
        for load in loads:
            name, _, source = load.partition(":")
            copy = self.credentials / name
            # As root, as systemd does: the service's user may not read the source.
            shutil.copyfile(self.root.path(source), copy)
            os.chown(copy, self.uid, self.uid)
            copy.chmod(0o400)
        os.chown(self.credentials, self.uid, self.uid)
        self.credentials.chmod(0o500)
        self.environment["CREDENTIALS_DIRECTORY"] = str(self.credentials)

    def argv(self, umask: int) -> list[str]:
        command = shlex.split(self._specifiers(self.unit.value("ExecStart") or ""))
        assert command and command[0].startswith("/"), f"ExecStart: {command}"
        command[0] = str(self.root.path(command[0]))
        wrapper = ["prlimit", f"--nofile={self._nofile()}", "--"]
        if self.uid:
            ids = [f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
            wrapper += ["setpriv", *ids, *self._capabilities(), "--"]
            hidden = hidden_interpreter()
            if hidden is not None:
                wrapper = [*self._expose(*hidden, umask), *wrapper]
        return [*wrapper, *command]

    def _expose(self, blocked: Path, base: Path, umask: int) -> list[str]:
        """This checkout's Python, visible to the service's user in a mount namespace of
        the service's own (see `hidden_interpreter`)."""
        stage = self.root.directory / "interpreter"
        stage.mkdir(parents=True, exist_ok=True)
        script = (
            "set -e; umask 022; "
            'mount --bind "$1" "$2"; '
            'mount -t tmpfs -o mode=0755 floodgate-test "$3"; '
            'mkdir -p "$1"; mount --bind "$2" "$1"; '
            f'umask {umask:04o}; shift 3; exec "$@"'
        )
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                "expose", str(base), str(stage), str(blocked)]  # fmt: skip

    def _nofile(self) -> str:
        wanted = self.unit.value("LimitNOFILE")
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if wanted is None:
            return f"{hard}:{hard}"
        limit = min(int(wanted), hard)  # no CAP_SYS_RESOURCE here may cap it
        return f"{limit}:{limit}"

    def _capabilities(self) -> list[str]:
        def names(key: str) -> str | None:
            value = self.unit.value(key)
            if value is None:
                return None
            caps = [c.removeprefix("CAP_").lower() for c in value.split()]
            return ",".join(["-all", *(f"+{c}" for c in caps)])

        options = []
        ambient = names("AmbientCapabilities") or "-all"
        options += [f"--inh-caps={ambient}", f"--ambient-caps={ambient}"]
        bounding = names("CapabilityBoundingSet")
        if bounding is not None:
            options.append(f"--bounding-set={bounding}")
        if self.unit.value("NoNewPrivileges") == "yes":
            options.append("--no-new-privs")
        return options


@contextlib.contextmanager
def host_root(name: str = "host") -> Iterator[Root]:
    """A host's file system for a test, removed afterwards. Under /tmp and enterable by
    others (0711), so a service's dynamic user reaches its own directories in it (pytest's
    tmp_path is root's only)."""
    directory = Path(tempfile.mkdtemp(prefix=f"floodgate-{name}-"))
    directory.chmod(0o711)
    try:
        yield Root(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def hidden_interpreter() -> tuple[Path, Path] | None:
    """(the first directory others may not enter, the Python installation under it) when
    the interpreter of this checkout's .venv cannot be reached by another user, else None.

    deploy/README.md asks for a Python every user may run (the system's python3): the
    units' dynamic users must. A test machine's may live under /root (pyenv), mode 0700;
    the service then sees that one installation through a bind mount over a tmpfs in a
    mount namespace of its own, and nothing else of /root. Nothing outside it changes."""
    base = Path(sys.base_prefix).resolve()
    for directory in (*reversed(base.parents), base):
        if not directory.stat().st_mode & stat.S_IXOTH:
            return directory, base
    return None


def _dynamic_uid() -> int:
    taken = {p.pw_uid for p in pwd.getpwall()}
    running = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                running.add(entry.stat().st_uid)
            except OSError:
                continue
    while True:
        uid = DYNAMIC_UIDS.start + secrets.randbelow(len(DYNAMIC_UIDS))
        if uid not in taken and uid not in running:
            return uid


def start(unit: Unit, root: Root, spawn: Spawn = subprocess.Popen) -> Service:
    """Start `unit`'s main process on `root`'s host (`spawn`: e.g. a netns Host's popen),
    its output in `<root>/journal/<unit>.log`."""
    prepared = Prepared(unit, root)
    log_path = root.directory / "journal" / f"{unit.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    umask = int(unit.value("UMask", "0022") or "0022", 8)
    with open(log_path, "ab") as log:
        process = spawn(
            prepared.argv(umask),
            env=prepared.environment,
            cwd="/",
            umask=umask,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Service(unit, process, prepared.uid, prepared.environment, log_path)
