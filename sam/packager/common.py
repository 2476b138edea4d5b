"""What the build's steps share: the repository's paths, the target runtime, what never ships, the log line
and the build's error (``sam/package.py`` re-exports all of it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PYTHON_VERSION = "3.12"
HANDLER_MODULE = "consumers.handler"
TEMPLATE = REPO / "sam" / "template.yaml"  # its functions' Handler: entries are the walk's starting points
SHIPPED_PACKAGE = "consumers"  # the Lambda code: everything under it ships, no other code does
DEFAULT_BUNDLE = Path("model/bundles/default")  # data: the default model, the template's default ModelUri

# Amazon Linux 2023 has glibc 2.34: manylinux_2_28 is the newest tag the wheels we use are built for.
PLATFORMS = {
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
}
ELF_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}

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
