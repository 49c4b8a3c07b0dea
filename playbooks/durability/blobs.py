"""Content-addressed storage for large values inside records and snapshots.

A long string or list would otherwise be rewritten into every snapshot. It is
stored once under the hash of its content and referenced; a list is cut into
fixed 32-item chunks so that appending to it leaves the earlier chunks
byte-identical (same hash, never written again).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

BLOB_KEY = "__blob__"
CHUNKS_KEY = "__chunks__"
ESC_KEY = "__esc__"  # wraps a caller's dict that happens to use one of our keys
INLINE_MAX = 8 * 1024
CHUNK_ITEMS = 32
_NAME = re.compile(r"[0-9a-f]{64}")


class MissingBlob(Exception):
    """A referenced blob is absent or damaged."""


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # built once


def _rust_writer() -> Callable[[Any], bytes] | None:
    """pydantic-core's JSON writer, if what it writes reads back as ``_ENCODE``'s text does.

    It is three times faster on a record (every await writes one), and
    pydantic is a dependency already. Checked once, on the values where
    writers differ (NaN, exponents, escapes, big numbers), so a version
    that writes otherwise is simply not used. (It writes ``1e-7`` where
    ``json`` writes ``1e-07``: the same float.)"""
    try:
        from pydantic_core import SchemaSerializer, core_schema

        config = core_schema.CoreConfig(ser_json_inf_nan="constants")
        writer = SchemaSerializer(core_schema.any_schema(), config).to_json  # built once
        sample = {"a": [float("nan"), -float("inf"), 1e16, 1e-7, 0.1, "é\n\x00", 10**30, None]}
        if repr(loads(writer(sample))) != repr(sample):
            return None
    except Exception:  # an older pydantic-core without that setting
        return None
    return writer


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; lone surrogates survive (they are legal in Python str).

    What comes here is plain data already (the value encoder made it so).
    The fast writer refuses a cycle, an unknown type and a lone surrogate;
    the standard encoder then answers, or raises as it always did."""
    if _RUST is not None:
        try:
            return _RUST(value)
        except ValueError:  # PydanticSerializationError: the standard encoder decides
            pass
    return _ENCODE(value).encode("utf-8", "surrogatepass")


def loads(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "surrogatepass"))


_RUST = _rust_writer()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    """Replace path with data so that a crash leaves either the old or the new file.

    The temporary name is the writer's own: two processes replacing the same
    file at once (a worker mending a meta.json another one is finishing) must
    not write into one temporary file, which could leave both halves mixed."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


class BlobStore:
    """The blobs/ directory of one execution."""

    def __init__(self, directory: Path, fsync: bool) -> None:
        self.dir = directory
        self.fsync = fsync
        self._known: set[str] | None = None  # listed once, then kept up to date
        #: Large strings of the last externalize, by identity, with their hash:
        #: a snapshot re-externalizes the same unchanged text (a response, a
        #: long variable) every time, and need not encode and hash it again.
        #: Each entry holds its string, so its id cannot be reused meanwhile.
        self._seen: dict[int, tuple[str, str]] = {}
        self._seeing: dict[int, tuple[str, str]] = {}

    def names(self) -> set[str]:
        if self._known is None:
            try:
                self._known = {n for n in os.listdir(self.dir) if _NAME.fullmatch(n)}
            except FileNotFoundError:
                self._known = set()
        return self._known

    def put(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        if sha not in self.names():
            if not self.dir.exists():
                os.mkdir(self.dir, 0o700)
            write_atomic(self.dir / sha, zlib.compress(content, 1), self.fsync)
            self.names().add(sha)
        return sha

    def get(self, sha: str, cache: dict[str, bytes] | None = None) -> bytes:
        if cache is not None and sha in cache:
            return cache[sha]
        if not isinstance(sha, str) or not _NAME.fullmatch(sha):
            raise MissingBlob(f"bad blob reference {sha!r}")
        try:
            content = zlib.decompress((self.dir / sha).read_bytes())
        except (OSError, zlib.error) as exc:
            raise MissingBlob(f"blob {sha[:12]} is missing or damaged ({exc})") from None
        if hashlib.sha256(content).hexdigest() != sha:
            raise MissingBlob(f"blob {sha[:12]} does not match its hash")
        if cache is not None:
            cache[sha] = content
        return content

    def remove(self, sha: str) -> int:
        """Delete one blob; returns the bytes freed."""
        path = self.dir / sha
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            size = 0
        self.names().discard(sha)
        return size

    def externalize(self, value: Any) -> tuple[Any, set[str]]:
        """Replace large strings and lists by references; returns (value, refs)."""
        refs: set[str] = set()
        self._seeing = {}
        try:
            out, _ = self._ext(value, refs)
        finally:
            self._seen, self._seeing = self._seeing, {}
        return out, refs

    def _put_text(self, v: str) -> str:
        known = self._seen.get(id(v))
        if known is not None and known[0] is v and known[1] in self.names():
            sha = known[1]
        else:
            sha = self.put(dumps(v))
        self._seeing[id(v)] = (v, sha)
        return sha

    def _ext(self, v: Any, refs: set[str]) -> tuple[Any, int]:
        """Returns the externalized value and its approximate JSON size."""
        if isinstance(v, str):
            if len(v) > INLINE_MAX:
                sha = self._put_text(v)
                refs.add(sha)
                return {BLOB_KEY: sha}, 80
            return v, len(v) + 2
        if isinstance(v, (list, tuple)):
            items, size = [], 2
            for x in v:
                e, s = self._ext(x, refs)
                items.append(e)
                size += s + 1
            if size <= INLINE_MAX or len(items) < CHUNK_ITEMS:
                return items, size
            full = len(items) // CHUNK_ITEMS
            shas = []
            for i in range(full):
                shas.append(self.put(dumps(items[i * CHUNK_ITEMS : (i + 1) * CHUNK_ITEMS])))
            refs.update(shas)
            tail = items[full * CHUNK_ITEMS :]
            return {CHUNKS_KEY: shas, "tail": tail}, 70 * full + len(dumps(tail))
        if isinstance(v, dict):
            out: dict[str, Any] = {}
            size = 2
            for k, x in v.items():
                e, s = self._ext(x, refs)
                out[k] = e
                size += len(str(k)) + 4 + s
            if BLOB_KEY in v or CHUNKS_KEY in v or ESC_KEY in v:
                return {ESC_KEY: out}, size + 12
            return out, size
        return v, 8

    def resolve(self, v: Any, refs: set[str], cache: dict[str, bytes] | None = None) -> Any:
        """Inverse of externalize; adds every blob it reads to refs."""
        if isinstance(v, list):
            return [self.resolve(x, refs, cache) for x in v]
        if not isinstance(v, dict):
            return v
        if ESC_KEY in v:
            return {k: self.resolve(x, refs, cache) for k, x in v[ESC_KEY].items()}
        if BLOB_KEY in v:
            sha = v[BLOB_KEY]
            value = loads(self.get(sha, cache))
            refs.add(sha)
            return self.resolve(value, refs, cache)
        if CHUNKS_KEY in v:
            out: list[Any] = []
            for sha in v[CHUNKS_KEY]:
                chunk = loads(self.get(sha, cache))
                refs.add(sha)
                out.extend(self.resolve(chunk, refs, cache))
            out.extend(self.resolve(v.get("tail", []), refs, cache))
            return out
        return {k: self.resolve(x, refs, cache) for k, x in v.items()}
