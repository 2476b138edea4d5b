"""The model registry: verified bundles by version, and one alias document that says which version serves.

Layout (a local directory or an S3 prefix; ``root`` is one model's registry)::

    <root>/<version>/model.ubj, features.json, card.json   a verified bundle (consumers/core/bundle.py); the
                                                           version is its content hash, so a version's files
                                                           never change once published
    <root>/aliases.json                                    the alias document (below)

The alias document holds the three aliases together: ``live`` (the version that decides), ``shadow`` (scored
beside it on every event, stored, never deciding) and ``canary`` with ``canary_percent`` (the share of
events, picked by a stable hash of ``event_id``, that it scores as the live score), plus ``generation``
(+1 per change) and the ``history`` of every change (who, when, what; the newest last). One document, not
one per alias: a promotion that moves the canary to live and clears the canary is one atomic write, and a
consumer's check is one conditional GET (an unchanged document costs a 304 and no body).

Every write is conditional on the document the writer read (``RegistryStore.put(expect=etag)``: S3's
``If-Match`` / ``If-None-Match``; locally a lock and a hash compare), so two people promoting at once cannot
lose an update: the second write is refused (``Conflict``) and nothing is written; it re-reads and decides
again.

A consumer names the registry with ``MODEL_URI=<root>@live`` (``parse_model_uri``). This module is pure:
the S3 reader lives in ``consumers/aws/registry_s3.py``; the CLI that writes (publish, promote, rollback)
in ``model/registry.py`` with its S3 store ``model/registry_s3.py``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from consumers.core.errors import ScoringError

ALIASES_FILE = "aliases.json"
FORMAT = 1
ALIASES = ("live", "shadow", "canary")
HISTORY_KEPT = 200  # entries kept in the document (the oldest dropped): it stays a few tens of KB
_VERSION = re.compile(r"[0-9a-f]{16}")


class RegistryError(ScoringError):
    """The registry cannot be read or written (the message names the URI and why)."""


class Missing(RegistryError):
    """The object does not exist."""


class Conflict(RegistryError):
    """A conditional write lost: the document changed since it was read (or exists, for a create)."""


class AliasDocError(RegistryError):
    """An alias document that is not valid (the message says which field)."""


class Fetched(NamedTuple):
    data: bytes
    etag: str


class RegistryReader(Protocol):
    """What a consumer needs. Keys are relative to the registry root (``aliases.json``,
    ``<version>/card.json``)."""

    uri: str

    def get(self, key: str, *, etag: str | None = None) -> Fetched | None:
        """The object, or None when ``etag`` is given and still current (not modified). ``Missing`` if
        absent; ``RegistryError`` for anything else."""
        ...

    def bundle_uri(self, version: str) -> str:
        """What ``load_bundle`` takes for this version."""
        ...


class RegistryStore(RegistryReader, Protocol):
    """What the people who publish need besides (``model/registry.py``)."""

    def put(self, key: str, data: bytes, *, expect: str | None) -> str:
        """Write if the current object's etag is ``expect`` (None: only if it does not exist); return the
        new etag. ``Conflict`` otherwise."""
        ...

    def versions(self) -> list[str]:
        """The version directories under the root."""
        ...


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise AliasDocError(f"a model version is 16 hex digits (sha256 of model.ubj), got {version!r}")
    return version


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- the alias document -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Aliases:
    live: str | None = None
    shadow: str | None = None
    canary: str | None = None
    canary_percent: float = 0.0
    generation: int = 0
    updated_at: str = ""
    updated_by: str = ""
    history: tuple[dict[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ALIASES:
            value = getattr(self, name)
            if value is not None:
                check_version(value)
        p = self.canary_percent
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 100:
            raise AliasDocError(f"canary_percent must be a number in 0..100, got {p!r}")
        if (self.canary is None) != (p == 0):
            raise AliasDocError("a canary needs a percentage above 0, and a percentage needs a canary")
        if isinstance(self.generation, bool) or not isinstance(self.generation, int) or self.generation < 0:
            raise AliasDocError(f"generation must be a non-negative integer, got {self.generation!r}")

    def versions(self) -> dict[str, str]:
        """alias -> version of the aliases that are set."""
        return {a: v for a in ALIASES if (v := getattr(self, a)) is not None}

    def previous_lives(self) -> list[str]:
        """The versions that were live before the current one, most recent first, each once, without those a
        rollback moved away from (so a second rollback goes further back instead of undoing the first)."""
        rolled_back = {e.get("previous_live") for e in self.history if e.get("action") == "rollback"}
        out: list[str] = []
        for entry in reversed(self.history):
            prev = entry.get("previous_live")
            if isinstance(prev, str) and prev != self.live and prev not in out and prev not in rolled_back:
                out.append(prev)
        return out

    def changed(self, by: str, action: str, **details: Any) -> Aliases:
        """The next document: this one with ``details`` applied (alias fields), one generation on, the
        change appended to the history (with the live version it replaced, for rollback)."""
        fields_ = {k: v for k, v in details.items() if k in ("live", "shadow", "canary", "canary_percent")}
        at = utc_now()
        nxt = replace(self, **fields_, generation=self.generation + 1, updated_at=at, updated_by=by)
        entry: dict[str, Any] = {"generation": nxt.generation, "at": at, "by": by, "action": action}
        entry.update({k: v for k, v in details.items() if k not in ("live",)})
        if nxt.live != self.live:
            entry["live"] = nxt.live
            entry["previous_live"] = self.live
        return replace(nxt, history=(*self.history, entry)[-HISTORY_KEPT:])

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "live": self.live,
            "shadow": self.shadow,
            "canary": self.canary,
            "canary_percent": self.canary_percent,
            "generation": self.generation,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
            "history": list(self.history),
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, uri: str = ALIASES_FILE) -> Aliases:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise AliasDocError(f"{uri}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise AliasDocError(f"{uri}: must be a JSON object")
        if doc.get("format") != FORMAT:
            raise AliasDocError(
                f"{uri}: format is {doc.get('format')!r}; this consumer reads format {FORMAT}"
            )
        history = doc.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise AliasDocError(f"{uri}: history must be a list of objects")
        try:
            return cls(
                live=doc.get("live"),
                shadow=doc.get("shadow"),
                canary=doc.get("canary"),
                canary_percent=doc.get("canary_percent", 0),
                generation=doc.get("generation", 0),
                updated_at=str(doc.get("updated_at", "")),
                updated_by=str(doc.get("updated_by", "")),
                history=tuple(history),
            )
        except AliasDocError as exc:
            raise AliasDocError(f"{uri}: {exc}") from None


# --- naming a registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryRef:
    root: str  # s3://bucket/prefix/<model> or a directory
    alias: str  # what MODEL_URI follows: always "live" (shadow and canary come with it)


def parse_model_uri(uri: str) -> RegistryRef | None:
    """``<root>@live`` names a registry alias; anything else (a bundle directory or prefix) is None."""
    root, at, alias = uri.rpartition("@")
    if not at or "/" in alias:
        return None
    if alias != "live":
        raise RegistryError(
            f"MODEL_URI {uri}: a consumer follows the registry's live alias ({root}@live); "
            "shadow and canary come from the same alias document"
        )
    if not root.rstrip("/"):
        raise RegistryError(f"MODEL_URI {uri}: the registry root before @live is empty")
    return RegistryRef(root.rstrip("/"), alias)


def etag_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalStore:
    """A registry in a directory. Writes take an exclusive lock on ``<root>/.lock`` (``flock``: every process
    on this machine), compare the current file's hash with ``expect``, write a temporary file and rename it,
    so a reader never sees half a document and two writers cannot both win."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise RegistryError(f"registry {self.uri}: key {key!r} is outside the registry")
        return path

    def get(self, key: str, *, etag: str | None = None) -> Fetched | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise Missing(f"registry {self.uri}: {key} does not exist") from None
        except OSError as exc:
            raise RegistryError(f"registry {self.uri}: cannot read {key}: {exc}") from exc
        tag = etag_of(data)
        return None if etag == tag else Fetched(data, tag)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def put(self, key: str, data: bytes, *, expect: str | None) -> str:
        path = self._path(key)
        with self._locked():
            current = etag_of(path.read_bytes()) if path.exists() else None
            if current != expect:
                what = "exists" if expect is None else "changed since it was read"
                raise Conflict(f"registry {self.uri}: {key} {what}; nothing written")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return etag_of(data)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name))

    def bundle_uri(self, version: str) -> str:
        return str(self.root / check_version(version))


def read_aliases(store: RegistryReader, *, etag: str | None = None) -> tuple[Aliases, str] | None:
    """The alias document and its etag; None if ``etag`` is still current. A registry without one yet reads
    as empty aliases (etag "")."""
    try:
        got = store.get(ALIASES_FILE, etag=etag)
    except Missing:
        return (Aliases(), "") if etag != "" else None
    if got is None:
        return None
    return Aliases.from_json(got.data, uri=f"{store.uri}/{ALIASES_FILE}"), got.etag
