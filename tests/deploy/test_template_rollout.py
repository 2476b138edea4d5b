"""The template's side of model rollout (docs/rollout.md): the stream function's settings and a model prefix
no function can write."""

from __future__ import annotations

import json
import re


def test_the_stream_function_follows_a_registry_with_read_only_access(template):
    fn = template["Resources"]["ScoringFunction"]["Properties"]
    env = fn["Environment"]["Variables"]
    assert env["MODEL_REFRESH_S"] == {"Ref": "ModelRefreshSeconds"}
    assert env["GUARDRAIL_BATCHES"] == {"Ref": "GuardrailBatches"}
    assert env["GUARDRAIL_MAX_ERROR_RATE"] == {"Ref": "GuardrailMaxErrorRate"}
    assert env["GUARDRAIL_MAX_QUARANTINE_RATE"] == {"Ref": "GuardrailMaxQuarantineRate"}
    assert template["Parameters"]["ModelRefreshSeconds"]["Default"] == 60
    # the model prefix (bundles and the registry's aliases) is readable, never writable, by any function
    for name, res in template["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        for policy in res["Properties"].get("Policies", []):
            for st in policy.get("Statement", []) if isinstance(policy, dict) else []:
                resource = json.dumps(st.get("Resource"))
                if "ModelPrefix" in resource:
                    assert st["Action"] == "s3:GetObject", (name, st)


def test_guardrail_rates_accept_what_the_function_accepts(template):
    from consumers.core.config import Settings

    t = template
    for param in ("GuardrailMaxErrorRate", "GuardrailMaxQuarantineRate"):
        pattern = re.compile(t["Parameters"][param]["AllowedPattern"])
        for ok in ("0", "0.3", "1", "1.0", "0.05"):
            assert pattern.fullmatch(ok), (param, ok)
            Settings.from_env({"GUARDRAIL_MAX_ERROR_RATE": ok}, require=())
        for bad in ("1.5", "-0.1", "abc", ".5", ""):
            assert not pattern.fullmatch(bad), (param, bad)
