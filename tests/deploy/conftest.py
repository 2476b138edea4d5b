"""The template as CloudFormation reads it (short tags decoded by cfn-lint), for every template test."""

from __future__ import annotations

from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "sam" / "template.yaml"


@pytest.fixture(scope="session")
def template() -> dict:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(TEMPLATE))


@pytest.fixture(scope="session")
def function(template) -> dict:
    """The stream function's resource."""
    return template["Resources"]["ScoringFunction"]
