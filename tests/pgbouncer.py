"""A real PgBouncer in transaction pooling mode, in front of the test server.

One process per test session, on a free loopback port, with its files in a temporary
directory, run as the `postgres` OS user when the tests run as root (PgBouncer refuses
to run as root). Its `[databases]` section has a `*` entry, so every test database is
reachable through it under its own name, with up to DEFAULT_POOL_SIZE server
connections, which PgBouncer hands from client to client at each transaction's end. For
the database named `shared` two more entries force the sharing: `<shared>_one` and
`<shared>_two` reach it through pools of one and of two server connections, however
many clients connect.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

# How long PgBouncer may take to start answering: a guard against a hang, not a limit on
# speed (it answers within milliseconds).
_START_PATIENCE_S = 30
# The most transactions a test holds open at once (16 key package claimers that wait for
# each other), with room to spare: a pool smaller than that would stall such a test.
DEFAULT_POOL_SIZE = 20
# Sizes of the small pools: the entries <shared>_one and <shared>_two.
SMALL_POOLS = {1: "one", 2: "two"}


@dataclass(frozen=True)
class Bouncer:
    """A running PgBouncer: where it listens, and its admin console."""

    host: str
    port: int
    user: str
    password: str | None
    dir: Path
    pid: int

    def url(self, dbname: str, *, pool_size: int | None = None) -> str:
        """A URL to `dbname` through PgBouncer: through the `*` entry, or through the
        entry whose pool has `pool_size` (1 or 2) server connections."""
        if pool_size is not None:
            dbname = f"{dbname}_{SMALL_POOLS[pool_size]}"
        auth = f"{self.user}:{self.password}@" if self.password else f"{self.user}@"
        return f"postgresql://{auth}{self.host}:{self.port}/{dbname}"

    def admin(self, command: str) -> list[tuple[object, ...]]:
        """Run one command on the admin console (simple query protocol: no parameters)."""
        with psycopg.connect(self.url("pgbouncer"), autocommit=True) as conn:
            cur = conn.execute(command)
            return cur.fetchall() if cur.description else []

    def drop_server_connections(self, dbname: str) -> None:
        """Close every connection PgBouncer holds for `dbname` (and its small pools), so
        that none outlives the database; new clients are let in again right away."""
        known = {str(row[0]) for row in self.admin("SHOW DATABASES")}
        for name in (dbname, *(f"{dbname}_{n}" for n in SMALL_POOLS.values())):
            if name in known:
                self.admin(f"KILL {name}")
                self.admin(f"RESUME {name}")

    def log(self) -> str:
        """PgBouncer's log so far."""
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ini(
    directory: Path,
    port: int,
    server: tuple[str, int, str, str | None],
    shared: str,
    default_pool_size: int,
) -> str:
    host, server_port, user, password = server
    target = f"host={host} port={server_port} user={user}"
    if password:
        target += f" password={password}"
    small = "\n".join(
        f"{shared}_{name} = {target} dbname={shared} pool_size={size}"
        for size, name in SMALL_POOLS.items()
    )
    return f"""\
[databases]
{small}
* = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
admin_users = {user}
pool_mode = transaction
default_pool_size = {default_pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
# A client that waits this long for a server connection gets an error, not a hang.
query_wait_timeout = 30
server_reset_query =
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
"""


@contextlib.contextmanager
def run_pgbouncer(
    server: tuple[str, int, str, str | None],
    shared: str,
    *,
    default_pool_size: int = DEFAULT_POOL_SIZE,
) -> Iterator[Bouncer]:
    """Start PgBouncer in front of `server` (host, port, user, password), yield it, and
    stop it by its pid. `shared` names the database that gets a `<shared>_one` entry."""
    binary = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
    directory = Path(tempfile.mkdtemp(prefix="catbird-pgbouncer-"))
    port = _free_port()
    (directory / "pgbouncer.ini").write_text(
        _ini(directory, port, server, shared, default_pool_size)
    )
    user = server[2]
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (directory, *directory.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        command = ["runuser", "-u", "postgres", "--", *command]
    # It logs to its logfile as well as to stderr: keep the test output to the tests.
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    bouncer: Bouncer | None = None
    try:
        bouncer = _wait_until_ready(proc, directory, port, server)
        yield bouncer
    finally:
        _stop(proc, bouncer)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_until_ready(
    proc: subprocess.Popen[bytes],
    directory: Path,
    port: int,
    server: tuple[str, int, str, str | None],
) -> Bouncer:
    deadline = time.monotonic() + _START_PATIENCE_S
    pidfile = directory / "pgbouncer.pid"
    while True:
        if proc.poll() is not None:
            log = (directory / "pgbouncer.log").read_text(errors="replace")
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}:\n{log}")
        if pidfile.exists() and pidfile.read_text().strip():
            bouncer = Bouncer(
                "127.0.0.1", port, server[2], server[3], directory, int(pidfile.read_text())
            )
            try:
                bouncer.admin("SHOW VERSION")
            except psycopg.OperationalError:
                pass
            else:
                return bouncer
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"pgbouncer did not answer on 127.0.0.1:{port}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes], bouncer: Bouncer | None) -> None:
    """SIGTERM to PgBouncer's own pid (immediate shutdown), then reap the launcher."""
    pid = bouncer.pid if bouncer is not None else proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=_START_PATIENCE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        proc.wait()
