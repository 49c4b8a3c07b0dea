"""A real PostgreSQL server for the tests: initdb + pg_ctl in a temp dir, on a free port.

PostgreSQL refuses to run as root, so when the tests run as root (CI) every
server command runs as the ``postgres`` user through ``runuser`` and the
temp dir is handed to that user. No binaries: the caller skips (or fails
when ``CI`` is set; see ``tests/conftest.py``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

SERVER_USER = "postgres"


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if all((folder / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One throwaway cluster; ``dsn()`` for a fresh schema of its own."""

    def __init__(self, bindir: Path, *, fsync: bool = False) -> None:
        self.bindir = bindir
        self.fsync = fsync
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self._user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root and there is no {SERVER_USER!r} user to run the server"
                ) from None
        self.root = Path(tempfile.mkdtemp(prefix="pb-pg-"))
        if self.as_root:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "server.log"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        # the server must not inherit our pipes (pg_ctl -l sends its output to a file)
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=self.root
        )
        if check and done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr or done.stdout}\n{log}")
        return done

    def start(self) -> PgServer:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "--encoding=UTF8",
            "--no-locale",  # no dependence on the locales the machine has
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200 "
            "-c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        return self

    def restart(self) -> None:
        """Stop (fast: open sessions are cut) and start again on the same port."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "restart"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def dsn(self) -> str:
        """A DSN whose tables live in a new, empty schema (isolation per test)."""
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.url()}?options=-csearch_path%3D{schema}"
