"""Sizes (per file tree, per top-level package, shown in MiB) and the deterministic zip."""

from __future__ import annotations

import zipfile
from collections import defaultdict
from pathlib import Path


def tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def size_table(target: Path) -> list[tuple[str, int]]:
    """Bytes per top-level package; ``X.libs`` and ``X-*.dist-info`` are counted with ``X``."""
    sizes: dict[str, int] = defaultdict(int)
    for entry in target.iterdir():
        name = entry.name
        if name.endswith(".dist-info"):
            key = name.split("-")[0]
        elif name.endswith(".libs"):
            key = name[: -len(".libs")]
        elif entry.is_file():
            key = entry.stem if entry.suffix in (".py", ".so") else name
            key = key.split(".")[0]
        else:
            key = name
        sizes[key.lower().replace("-", "_")] += tree_size(entry) if entry.is_dir() else entry.lstat().st_size
    return sorted(sizes.items(), key=lambda kv: -kv[1])


def write_zip(source: Path, dest: Path) -> int:
    """A deterministic zip (sorted entries, fixed timestamps), for `aws lambda update-function-code`."""
    tmp = dest.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(source)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = ((0o755 if path.stat().st_mode & 0o111 else 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as fh:
                zf.writestr(info, fh.read(), compresslevel=6)
    tmp.replace(dest)
    return dest.stat().st_size


def mib(n: int) -> str:
    return f"{n / 2**20:8.1f} MiB"
