"""The project's part of the package: ``consumers/`` whole (every handler of the template must be in it),
the model bundle, the .pyc of every module, and permissions Lambda can read."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from sam.packager.common import (
    DEFAULT_BUNDLE,
    HANDLER_MODULE,
    REPO,
    SHIPPED_PACKAGE,
    TEMPLATE,
    BuildError,
    log,
)

# ---------------------------------------------------------------- project code: the shipped directory


def shipped_files(root: Path = REPO) -> list[Path]:
    """Every file under ``consumers/`` (the directory decides what ships), caches and dotfiles left out."""
    base = root / SHIPPED_PACKAGE
    return sorted(
        p
        for p in base.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def handler_modules(template: Path = TEMPLATE) -> list[str]:
    """The module of every ``Handler: module.function`` in the template (the Kinesis handler when none)."""
    try:
        text = template.read_text()
    except OSError:
        return [HANDLER_MODULE]
    found = re.findall(r"^\s+Handler:\s*([A-Za-z_][A-Za-z0-9_.]*)\.[A-Za-z_][A-Za-z0-9_]*\s*$", text, re.M)
    return sorted(set(found)) or [HANDLER_MODULE]


def check_handlers(entries: list[str], root: Path = REPO) -> None:
    """Every handler the template names must be a module of the shipped package."""
    for entry in entries:
        if entry.split(".")[0] != SHIPPED_PACKAGE:
            raise BuildError(
                f"the template's handler {entry} is not under {SHIPPED_PACKAGE}/: it would not ship"
            )
        base = root.joinpath(*entry.split("."))
        if not base.with_suffix(".py").is_file() and not (base / "__init__.py").is_file():
            raise BuildError(f"the template's handler {entry} has no module under {root}")


# ---------------------------------------------------------------- steps


def copy_project(target: Path, bundle: Path | None) -> list[str]:
    """``consumers/`` whole (the Lambda code, every entry point) and the model bundle (data) as
    ``model/bundles/default/``; nothing else of the repository."""
    entries = handler_modules()
    check_handlers(entries)
    files = shipped_files()
    for src in files:
        dst = target / src.relative_to(REPO)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    if bundle is not None:
        if not (bundle / "model.ubj").is_file():
            raise BuildError(
                f"{bundle} has no model.ubj: train one first "
                f"(python -m model train --out {DEFAULT_BUNDLE}) or pass --no-bundle "
                f"and deploy with an s3:// ModelUri"
            )
        shutil.copytree(bundle, target / DEFAULT_BUNDLE, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    modules = sorted(
        ".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for f in files
        if f.suffix == ".py"
    )
    log(
        f"  project: {SHIPPED_PACKAGE}/ ({len(modules)} modules; handlers {', '.join(entries)})"
        + (f" + {DEFAULT_BUNDLE}/ (from {bundle})" if bundle is not None else "")
    )
    return modules


def compile_pyc(target: Path, python: str) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(target)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        # A dependency may ship a file that is not valid 3.12 syntax (templates, py2 leftovers); Python
        # would fail on it too if it were ever imported, so report and go on.
        log(
            "  compileall reported errors (files it could not compile keep no .pyc):\n    "
            + "\n    ".join(proc.stdout.strip().splitlines()[-10:])
        )
    n = sum(1 for _ in target.rglob("*.cpython-312.pyc"))
    log(f"  compiled {n} modules with {python} (unchecked-hash) in {time.perf_counter() - t0:.1f} s")


def fix_permissions(target: Path) -> None:
    """Lambda runs the code as a user that does not own the files: everything must be world-readable."""
    for dirpath, _dirnames, filenames in os.walk(target):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, 0o755 if mode & 0o111 else 0o644)
