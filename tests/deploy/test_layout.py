"""The layout's promises, checked on the code as it is (docs/architecture.md,
"Layout"): the pure core loads no AWS SDK when imported, its third-party
imports are the three it may have, and the directory decides what ships."""

from __future__ import annotations

import subprocess
import sys

import grimp

from tests.helpers import REPO_ROOT

CORE_THIRD_PARTY = {"numpy", "xgboost", "orjson"}


def test_importing_the_core_loads_no_aws_sdk_or_powertools():
    # GIVEN a fresh interpreter; WHEN every core module is
    # imported; THEN none of the AWS/Lambda libraries is loaded
    modules = sorted(
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts)
        for p in (REPO_ROOT / "consumers" / "core").glob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'boto3', 'botocore', 's3transfer', 'urllib3', 'aws_lambda_powertools', 'aws_xray_sdk'})\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert len(modules) >= 10 and proc.stdout.strip() == "", proc.stdout


def test_the_core_imports_only_numpy_xgboost_and_orjson_outside_the_stdlib():
    graph = grimp.build_graph("consumers", include_external_packages=True)
    external = {
        imported.split(".")[0]
        for module in graph.find_descendants("consumers.core")
        for imported in graph.find_modules_directly_imported_by(module)
        if not imported.startswith("consumers")
    }
    stdlib = set(sys.stdlib_module_names)
    assert external - stdlib <= CORE_THIRD_PARTY, sorted(external - stdlib)


def test_every_entry_point_of_the_template_is_in_the_shipped_directory():
    import re

    text = (REPO_ROOT / "sam" / "template.yaml").read_text()
    handlers = set(re.findall(r"^\s+Handler:\s*([A-Za-z_][\w.]*)\.\w+\s*$", text, re.M))
    assert handlers == {
        "consumers.handler",
        "consumers.http_handler",
        "consumers.s3_handler",
        "consumers.s3_worker",
        "consumers.collision_handler",
    }
    for h in handlers:
        assert (REPO_ROOT / (h.replace(".", "/") + ".py")).is_file(), h
