"""The dependencies: a python3.12 interpreter for the .pyc, the pins of ``requirements/lambda.txt``, their
``pip install`` as wheels for the Lambda's platform, and the check of what was installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sam.packager.common import FORBIDDEN_DISTS, PLATFORMS, PYTHON_VERSION, REPO, BuildError, log


def find_python312(explicit: str | None) -> str:
    """An interpreter whose bytecode matches the runtime's (the .pyc magic number is per minor version)."""
    candidates = [explicit] if explicit else []
    if sys.version_info[:2] == (3, 12):
        candidates.append(sys.executable)
    candidates.append(shutil.which("python3.12") or "")
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
    for c in filter(None, candidates):
        try:
            out = subprocess.run(
                [c, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            continue
        if out.stdout.strip() == "True":
            return c
    raise BuildError(
        "no python3.12 interpreter found (needed to compile .pyc for the python3.12 runtime); "
        "pass --python PATH or --no-compile"
    )


def pinned_requirements(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_install(target: Path, arch: str, requirements: Path, logfile: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "--requirement",
        str(requirements),
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
    ]
    for tag in PLATFORMS[arch]:
        cmd += ["--platform", tag]
    shown = requirements.relative_to(REPO) if requirements.is_relative_to(REPO) else requirements
    log(f"pip install -r {shown} for cp312 {PLATFORMS[arch][0]} (log: {logfile})")
    t0 = time.perf_counter()
    with logfile.open("w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        tail = logfile.read_text().splitlines()[-25:]
        raise BuildError("pip install failed:\n  " + "\n  ".join(tail))
    log(f"  dependencies installed in {time.perf_counter() - t0:.1f} s")


def installed_dists(target: Path) -> dict[str, str]:
    dists = {}
    for d in target.glob("*.dist-info"):
        meta = (d / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.M)
        version = re.search(r"^Version: (.+)$", meta, re.M)
        if name and version:
            dists[canonical(name.group(1).strip())] = version.group(1).strip()
    return dists


def check_dists(target: Path, pins: dict[str, str]) -> None:
    dists = installed_dists(target)
    forbidden = sorted(FORBIDDEN_DISTS & dists.keys())
    if forbidden:
        raise BuildError(
            f"forbidden distributions installed: {forbidden} (the GPU build of xgboost; use xgboost-cpu)"
        )
    unpinned = sorted(set(dists) - set(pins))
    if unpinned:
        # Not fatal, but the package is then not reproducible: pin them in requirements/lambda.txt.
        log(
            "  WARNING: installed but not pinned in requirements/lambda.txt: "
            + ", ".join(f"{d}=={dists[d]}" for d in unpinned)
        )
    log(f"  {len(dists)} distributions: " + ", ".join(f"{d}=={v}" for d, v in sorted(dists.items())))
