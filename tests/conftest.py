"""Shared fixtures: a real PostgreSQL server, started once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pg_server import PgServer, find_bindir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """Skipped without server binaries, except in CI (env CI set), where it fails."""
    bindir = find_bindir()
    if bindir is None:
        message = "no PostgreSQL server binaries (initdb, pg_ctl) found"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install them (.ci/run does)")
        pytest.skip(message)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("psycopg is not installed: pip install -e '.[dev]'")
        pytest.skip("psycopg is not installed")
    server = PgServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_dsn(pg_server: PgServer) -> str:
    """A DSN of its own schema on the session's server: each test starts empty."""
    return pg_server.dsn()
