"""A real, throwaway PostgreSQL server for the tests (the tune command's ``--tune.storage postgresql://...``).

``postgres_server(tmp_path)`` starts one from the local PostgreSQL binaries and yields its SQLAlchemy URL,
``postgresql+psycopg2://postgres:PASSWORD@127.0.0.1:PORT/tune``: password authentication (scram-sha-256,
a random password per server), so the URL carries a password as a real one would, listening on 127.0.0.1
only, on a free port, with its data in a fresh folder under /tmp that is removed when the block ends, even
when the test fails. The server log is copied to ``tmp_path/postgres.log`` at the end, for a failure's
diagnosis.

PostgreSQL refuses to run as root: as root the binaries run as the ``postgres`` user (the Debian package
makes it; ``nobody`` otherwise), as anyone else as that user. The binaries are looked up on PATH, then in
/usr/lib/postgresql/<version>/bin, newest version first (Debian's ``apt-get install postgresql``; .ci/run
installs it). Missing binaries or psycopg2: the test is skipped, except in CI (the CI environment variable
set), where it fails: CI must really run it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

BINARIES = ("initdb", "pg_ctl", "postgres")
DATABASE = "tune"
SUPERUSER = "postgres"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it in CI, where the server must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the PostgreSQL tests must run, see .ci/run)", pytrace=False)
    pytest.skip(reason)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres together: PATH's, else the newest Debian version's."""
    initdb = shutil.which("initdb")
    if initdb:
        folder = Path(initdb).resolve().parent
        if all((folder / name).is_file() for name in BINARIES):
            return folder
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
        if all((folder / name).is_file() for name in BINARIES):
            return folder
    return None


def _server_user() -> pwd.struct_passwd | None:
    """Whom the binaries run as: None for the current user, a system user when that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root, and neither a 'postgres' nor a 'nobody' user to run PostgreSQL as", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Runner:
    """Runs the PostgreSQL binaries as the server's user."""

    def __init__(self, bin_dir: Path, user: pwd.struct_passwd | None):
        self.bin_dir = bin_dir
        self.user = user

    def chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def __call__(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self.user is not None:
            env["HOME"] = self.user.pw_dir
        return subprocess.run(
            [str(self.bin_dir / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",  # a folder the server's user can enter
            stdin=subprocess.DEVNULL,
            **kwargs,
        )


def _check(result: subprocess.CompletedProcess[str], what: str, log: Path | None = None) -> None:
    if result.returncode != 0:
        detail = f"{result.stdout}\n{result.stderr}"
        if log is not None and log.exists():
            detail += f"\n--- server log ---\n{log.read_text(errors='replace')[-4000:]}"
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{detail}", pytrace=False)


def _stop(run: _Runner, data: Path) -> None:
    """``pg_ctl stop -m immediate``; the postmaster killed by its pid if that did not do it."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        stopped = (
            run("pg_ctl", "-D", str(data), "stop", "-m", "immediate", "-w", "-t", "30", timeout=60).returncode == 0
        )
    except subprocess.TimeoutExpired:
        stopped = False
    if not stopped and pid_file.exists():
        with contextlib.suppress(ValueError, OSError, IndexError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def _create_database(port: int, password: str) -> None:
    import psycopg2

    deadline = time.monotonic() + 30
    while True:
        try:
            connection = psycopg2.connect(
                host="127.0.0.1", port=port, user=SUPERUSER, password=password, dbname="postgres"
            )
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        connection.autocommit = True  # CREATE DATABASE runs outside a transaction
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        connection.close()


def fresh_database(url: str, name: str) -> str:
    """Create the empty database ``name`` on the server of ``url`` (a :func:`postgres_server` URL); its URL."""
    import psycopg2

    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"database name {name!r}: lowercase letters, digits and '_' only")
    head, _, _ = url.rpartition("/")
    credentials, _, address = head.split("://", 1)[1].rpartition("@")
    user, _, password = credentials.partition(":")
    host, _, port = address.partition(":")
    connection = psycopg2.connect(host=host, port=int(port), user=user, password=password, dbname="postgres")
    try:
        connection.autocommit = True  # CREATE DATABASE runs outside a transaction
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()
    return f"{head}/{name}"


@contextlib.contextmanager
def postgres_server(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL server for the block: its SQLAlchemy URL (with password) to database ``tune``.

    ``tmp_path`` receives the server log (``postgres.log``) when the block ends; the data folder lives in
    its own folder under /tmp (pytest's tmp_path is not reachable by the ``postgres`` user when root).
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH nor in "
            "/usr/lib/postgresql/*/bin: apt-get install postgresql"
        )
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is not installed: pip install -e '.[postgres]'")
    run = _Runner(bin_dir, _server_user())

    root = Path(tempfile.mkdtemp(prefix="rnnl-pg-", dir="/tmp"))
    data, sockets, log = root / "data", root / "sockets", root / "postgres.log"
    password = secrets.token_hex(16)
    try:
        root.chmod(0o700)
        run.chown(root)
        sockets.mkdir(mode=0o700)
        run.chown(sockets)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        run.chown(pwfile)
        result = run(
            "initdb", "-D", str(data), "-U", SUPERUSER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        _check(result, "initdb")
        pwfile.unlink()
        for attempt in range(3):  # a free port can be taken between the probe and the start
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # a test server: speed over safety
            )
            result = run("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
            if result.returncode == 0:
                break
            _stop(run, data)
            if attempt == 2:
                _check(result, "pg_ctl start", log)
        _create_database(port, password)
        yield f"postgresql+psycopg2://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}"
    finally:
        try:
            _stop(run, data)
        finally:
            if log.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(log, Path(tmp_path) / "postgres.log")
            shutil.rmtree(root, ignore_errors=True)
