"""Trimming the installed dependencies: what the function never loads is deleted, and the shared libraries
lose their debug symbols."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from sam.packager.common import DROP_DIRS, DROP_DIST_INFO_FILES, DROP_SUFFIXES, ELF_MACHINE, log
from sam.packager.sizes import tree_size


def prune(target: Path) -> int:
    """Delete what the function never loads. Returns bytes removed."""
    removed = 0

    def rm(path: Path) -> None:
        nonlocal removed
        if path.is_dir() and not path.is_symlink():
            removed += tree_size(path)
            shutil.rmtree(path)
        else:
            removed += path.lstat().st_size
            path.unlink()

    if (target / "bin").exists():
        rm(target / "bin")
    for dirpath, dirnames, filenames in os.walk(target, topdown=True):
        here = Path(dirpath)
        for d in list(dirnames):
            if d in DROP_DIRS:
                rm(here / d)
                dirnames.remove(d)
        in_dist_info = here.name.endswith(".dist-info")
        for f in filenames:
            if f.endswith(DROP_SUFFIXES) or (in_dist_info and f in DROP_DIST_INFO_FILES):
                rm(here / f)
    for dirpath, _dirnames, _filenames in os.walk(target, topdown=False):  # left empty (e.g. *-stubs)
        if dirpath != str(target) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    return removed


def elf_machine(path: Path) -> str | None:
    with path.open("rb") as fh:
        head = fh.read(20)
    if head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little")
    return {62: "x86_64", 183: "aarch64"}.get(machine, str(machine))


def strip_libraries(target: Path, arch: str) -> int:
    """``strip --strip-debug`` every shared library: drops DWARF sections only (symbol tables stay, so
    patchelf-rewritten libraries keep working). Needs a strip that reads the target's ELF: the host's own
    when the architectures match, else ``<machine>-linux-gnu-strip`` (Debian: binutils-aarch64-linux-gnu)."""
    machine = ELF_MACHINE[arch]
    candidates = [f"{machine}-linux-gnu-strip"] + (["strip"] if platform.machine() == machine else [])
    strip = next(filter(None, map(shutil.which, candidates)), None)
    if not strip:
        log(
            f"  no strip for {machine} on this {platform.machine()} host ({' or '.join(candidates)}): "
            "shared libraries left as they are"
        )
        return 0
    saved = 0
    for path in sorted(target.rglob("*.so*")):
        if not path.is_file() or path.is_symlink() or elf_machine(path) != machine:
            continue
        before = path.stat().st_size
        proc = subprocess.run([strip, "--strip-debug", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"  strip failed on {path.relative_to(target)} (kept as is): {proc.stderr.strip()[:200]}")
            continue
        saved += before - path.stat().st_size
    return saved
