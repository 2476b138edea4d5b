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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from consumers.core.limits import LAMBDA_UNZIPPED_PACKAGE_BYTES  # noqa: E402

PYTHON_VERSION = "3.12"
HANDLER_MODULE = "consumers.handler"
TEMPLATE = REPO / "sam" / "template.yaml"  # its functions' Handler: entries are the walk's starting points
SHIPPED_PACKAGE = "consumers"  # the Lambda code: everything under it ships, no other code does
DEFAULT_BUNDLE = Path("model/bundles/default")  # data: the default model, the template's default ModelUri
REQUIREMENTS = REPO / "requirements" / "lambda.txt"
DEFAULT_OUT = REPO / "build" / "lambda"  # the CodeUri of sam/template.yaml

# Amazon Linux 2023 has glibc 2.34: manylinux_2_28 is the newest tag the wheels we use are built for.
PLATFORMS = {
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
}
ELF_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
ARCH_ALIASES = {"amd64": "x86_64", "aarch64": "arm64"}

# Never ship these: `xgboost` is the GPU build (~200 MB of NCCL); it must not come back through a dependency.
FORBIDDEN_DISTS = {"xgboost", "nvidia-nccl-cu12", "nvidia-nccl-cu13"}
# Removed from dependencies: not needed at run time.
DROP_DIRS = {"tests", "__pycache__"}
DROP_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h", ".hpp")
DROP_DIST_INFO_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def log(msg: str) -> None:
    print(f"[package] {msg}", flush=True)


class BuildError(Exception):
    pass


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
