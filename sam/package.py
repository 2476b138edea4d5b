"""Build the Lambda deployment artifact without Docker:
``python sam/package.py [--arch x86_64|arm64] [--out DIR] [--zip]``.

What ends up in ``--out`` (default ``build/lambda``, the ``CodeUri`` of ``sam/template.yaml``) is exactly what
Lambda unpacks into ``/var/task``:

1. the pinned dependencies of ``requirements/lambda.txt`` as **python3.12 wheels for the Lambda's
architecture**
   (``pip install --platform manylinux_2_28_<arch> --only-binary=:all: --python-version 3.12 --target``):
   the runtime is Amazon Linux 2023 (glibc 2.34), so manylinux_2_28 and older wheels run there. pip expands
   the newest tag to every older compatible one; the older ones are listed too so that intent is explicit;
2. the project's code: the directory ``consumers/``, whole (every ``Handler:`` of ``sam/template.yaml`` must
be a
   module in it; the local emulation lives in ``sam/local/``, training in ``model/``, so neither ships), plus
   the
   default bundle ``model/bundles/default/`` (data); one package serves every function;
3. ``__pycache__/*.cpython-312.pyc`` for every module, compiled by a python3.12 interpreter with
   ``--invalidation-mode unchecked-hash``. ``/var/task`` is read-only, so without them every cold start
   compiles every module it imports (``sam/coldstart.py`` measures the difference); ``unchecked-hash`` pycs
   are used without comparing a source mtime, which a zip keeps only to 2 s in local time. The ``.py``
   sources stay, so tracebacks show source lines (docs/deploy.md explains the choice).

Left out: ``bin/`` scripts, ``tests/`` directories of dependencies, type stubs, C headers/Cython sources,
``RECORD`` files (their hashes no longer match after stripping; ``importlib.metadata`` only needs
``METADATA``), and debug symbols of the shared libraries (``strip --strip-debug`` with a strip that reads
the target's ELF; tests/deploy/test_package.py imports and runs the result). The build prints the ten largest
packages and the unzipped
total, and fails above Lambda's 250 MB unzipped limit
(``consumers.core.limits.LAMBDA_UNZIPPED_PACKAGE_BYTES``).

pip keeps downloaded wheels in its own cache (``~/.cache/pip`` by default), so a re-run is fast. The build is
staged in ``<out>.tmp`` and renamed into place only when it succeeded. See docs/deploy.md.

The steps live in ``sam/packager/`` (``wheels``, ``trim``, ``project``, ``sizes``; ``common`` for what they
share); this script runs them in order (``build``) and re-exports their names.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Run by path (`python sam/package.py`): the repository root must be importable before any project module.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.core.limits import LAMBDA_UNZIPPED_PACKAGE_BYTES
from sam.packager.common import (
    DEFAULT_BUNDLE,
    DROP_DIRS,
    DROP_DIST_INFO_FILES,
    DROP_SUFFIXES,
    ELF_MACHINE,
    FORBIDDEN_DISTS,
    HANDLER_MODULE,
    PLATFORMS,
    PYTHON_VERSION,
    REPO,
    SHIPPED_PACKAGE,
    TEMPLATE,
    BuildError,
    log,
)
from sam.packager.project import (
    check_handlers,
    compile_pyc,
    copy_project,
    fix_permissions,
    handler_modules,
    shipped_files,
)
from sam.packager.sizes import mib, size_table, tree_size, write_zip
from sam.packager.trim import elf_machine, prune, strip_libraries
from sam.packager.wheels import (
    canonical,
    check_dists,
    find_python312,
    installed_dists,
    pinned_requirements,
    pip_install,
)

REQUIREMENTS = REPO / "requirements" / "lambda.txt"
DEFAULT_OUT = REPO / "build" / "lambda"  # the CodeUri of sam/template.yaml
ARCH_ALIASES = {"amd64": "x86_64", "aarch64": "arm64"}

# The names the steps had when they lived here: the tests and sam/coldstart.py load this file by path and use
# them as attributes of the module.
__all__ = [
    "ARCH_ALIASES",
    "DEFAULT_BUNDLE",
    "DEFAULT_OUT",
    "DROP_DIRS",
    "DROP_DIST_INFO_FILES",
    "DROP_SUFFIXES",
    "ELF_MACHINE",
    "FORBIDDEN_DISTS",
    "HANDLER_MODULE",
    "LAMBDA_UNZIPPED_PACKAGE_BYTES",
    "PLATFORMS",
    "PYTHON_VERSION",
    "REPO",
    "REQUIREMENTS",
    "SHIPPED_PACKAGE",
    "TEMPLATE",
    "BuildError",
    "build",
    "build_info",
    "canonical",
    "check_dists",
    "check_handlers",
    "compile_pyc",
    "copy_project",
    "elf_machine",
    "find_python312",
    "fix_permissions",
    "handler_modules",
    "installed_dists",
    "log",
    "main",
    "mib",
    "pinned_requirements",
    "pip_install",
    "prune",
    "shipped_files",
    "size_table",
    "strip_libraries",
    "tree_size",
    "write_zip",
]


def build(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    stage = out.with_name(out.name + ".tmp")
    python = None if args.no_compile else find_python312(args.python)
    t_start = time.perf_counter()
    log(f"building {out} for python{PYTHON_VERSION} {args.arch} (staging in {stage.name})")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    logfile = out.with_name(out.name + f"-pip-{args.arch}.log")

    requirements = Path(args.requirements).resolve()
    pip_install(stage, args.arch, requirements, logfile)
    check_dists(stage, pinned_requirements(requirements))

    removed = prune(stage)
    log(f"  pruned {removed / 2**20:.1f} MiB (bin/, tests/, stubs, headers, RECORD)")
    if not args.no_strip:
        saved = strip_libraries(stage, args.arch)
        log(f"  strip --strip-debug saved {saved / 2**20:.1f} MiB")

    copy_project(stage, None if args.no_bundle else Path(args.bundle).resolve())
    (stage / "build-info.json").write_text(
        json.dumps(build_info(args, requirements), indent=2, sort_keys=True) + "\n"
    )
    if python:
        compile_pyc(stage, python)
    else:
        log("  --no-compile: no .pyc (every cold start will compile every module it imports)")
    fix_permissions(stage)

    total = tree_size(stage)
    table = size_table(stage)
    log("largest packages (unzipped):")
    for name, size in table[:10]:
        log(f"  {name:<28}{mib(size)}")
    pyc = sum(p.stat().st_size for p in stage.rglob("*.pyc"))
    log(f"  {'(of which .pyc)':<28}{mib(pyc)}")
    limit = LAMBDA_UNZIPPED_PACKAGE_BYTES
    log(
        f"unzipped total: {total:,} bytes = {mib(total).strip()} "
        f"({100 * total / limit:.0f}% of Lambda's {limit // 2**20} MiB limit, incl. layers)"
    )
    if total > limit:
        raise BuildError(
            f"package is {mib(total).strip()} unzipped, over Lambda's {limit // 2**20} MiB limit"
        )

    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)
    if args.zip:
        zsize = write_zip(out, out.with_suffix(".zip"))
        log(f"zip: {out.with_suffix('.zip')} {mib(zsize).strip()}")
    log(f"done in {time.perf_counter() - t_start:.0f} s: {out}")
    return 0


def build_info(args: argparse.Namespace, requirements: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                [
                    "git",
                    "status",
                    "--porcelain",
                    "--",
                    SHIPPED_PACKAGE,
                    str(DEFAULT_BUNDLE),
                    str(requirements),
                ],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {
        "python": PYTHON_VERSION,
        "arch": args.arch,
        "platform": PLATFORMS[args.arch][0],
        "git_commit": commit + ("-dirty" if dirty else ""),
        "handler": f"{HANDLER_MODULE}.lambda_handler",
        "handlers": [f"{m}.lambda_handler" for m in handler_modules()],
        "requirements": pinned_requirements(requirements),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--arch",
        type=lambda a: ARCH_ALIASES.get(a, a),
        choices=sorted(PLATFORMS),
        default="x86_64",
        help="Lambda architecture (must match the template's Architecture parameter; default x86_64)",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default build/lambda)")
    p.add_argument("--zip", action="store_true", help="also write <out>.zip")
    p.add_argument(
        "--requirements",
        default=str(REQUIREMENTS),
        help="pinned requirements (default requirements/lambda.txt)",
    )
    p.add_argument("--python", default=None, help="python3.12 interpreter used to compile .pyc")
    p.add_argument(
        "--no-compile", action="store_true", help="ship no .pyc (for measuring; slower cold starts)"
    )
    p.add_argument("--no-strip", action="store_true", help="keep debug symbols of shared libraries")
    p.add_argument(
        "--bundle",
        default=str(REPO / DEFAULT_BUNDLE),
        help=f"model bundle shipped as {DEFAULT_BUNDLE}/ (default: the repo's)",
    )
    p.add_argument(
        "--no-bundle", action="store_true", help=f"do not ship {DEFAULT_BUNDLE}/ (ModelUri must be s3://)"
    )
    args = p.parse_args(argv)
    try:
        return build(args)
    except BuildError as exc:
        print(f"[package] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
