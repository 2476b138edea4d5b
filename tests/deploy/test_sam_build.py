"""`sam build` takes the package `make package` built, or fails saying to run it (sam/samcli/Makefile): every
function of the template uses SAM's makefile builder with that Makefile, run from the repository root. The
Makefile is exercised here with the real make, as SAM's CustomMakeBuilder calls it (`make -f <Makefile>
build-<LogicalId>` in the WorkingDirectory, ARTIFACTS_DIR in the environment); SAM CLI itself is not a dev
dependency (docs/deploy.md), and with SAM CLI 1.170 `sam build -t sam/template.yaml` gives the same
results."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_template import resources_of

REPO = Path(__file__).resolve().parents[2]
MAKEFILE = REPO / "sam" / "samcli" / "Makefile"


def make(cwd: Path, target: str, artifacts: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-f", str(MAKEFILE), target],
        cwd=cwd,
        env={**os.environ, "ARTIFACTS_DIR": str(artifacts)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_function_is_built_by_the_makefile_from_the_repository_root(template):
    functions = resources_of(template, "AWS::Serverless::Function")
    assert functions
    for name, fn in functions.items():
        meta = fn["Metadata"]
        assert "SkipBuild" not in meta, name
        assert meta["BuildMethod"] == "makefile", name
        base = REPO / "sam"
        assert (base / meta["ContextPath"] / "Makefile").resolve() == MAKEFILE, name
        assert (base / meta["ProjectRootDirectory"]).resolve() == MAKEFILE.parent, name  # copied: one file
        assert (base / meta["WorkingDirectory"]).resolve() == REPO, name
        assert (base / fn["Properties"]["CodeUri"]).resolve() == REPO / "build" / "lambda", name  # sam deploy


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_without_a_package_sam_build_fails_saying_to_run_make_package(tmp_path):
    out = make(tmp_path, "build-ScoringFunction", tmp_path / "artifacts")
    assert out.returncode != 0
    assert "build/lambda does not exist: run 'make package'" in out.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_with_a_package_sam_build_copies_it_unchanged(tmp_path):
    pkg = tmp_path / "build" / "lambda"
    (pkg / "consumers").mkdir(parents=True)
    (pkg / "consumers" / "handler.py").write_text("# handler\n")
    (pkg / "lib.cpython-312-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (pkg / "consumers" / "__pycache__").mkdir()
    (pkg / "consumers" / "__pycache__" / "handler.cpython-312.pyc").write_bytes(b"pyc")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    out = make(tmp_path, "build-BatchScoringFunction", artifacts)
    assert out.returncode == 0, out.stderr
    copied = sorted(p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
