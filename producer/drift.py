"""Drifted traffic on purpose (``python -m producer publish --drift SPEC``, ``make run-drift``): shift chosen
features of the synthetic events so that drift monitoring has something to find (consumers/core/drift.py).

SPEC is a comma-separated list of changes, each on one feature of ``features.json``::

    amount*3            multiply (float and int features; ints are rounded)
    ip_risk_score+0.3   add (a negative number subtracts: ``ip_risk_score+-0.1``)
    channel=ecommerce   set (a category of the schema; ``true``/``false`` for bool; a number)
    device_age_days=    remove the field (optional features only: it becomes missing)
    ...@0.5             any change on a share of the events only (deterministic by event index)

Changed values are clipped to the feature's bounds, so a drifted event is still valid (it is scored, not
quarantined): drift is a change of distribution, not malformed input. Errors name the part of SPEC that is
wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from consumers.core.schema import Feature, FeatureSchema

_PART = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>[*+=])(?P<value>[^@]*)(?:@(?P<share>[0-9.]+))?$")


class DriftSpecError(ValueError):
    """A SPEC that cannot be applied (the message names the part)."""


@dataclass(frozen=True)
class Change:
    feature: Feature
    op: str  # "*", "+", "=" (set), "-" (remove)
    value: Any
    share: float = 1.0

    def applies(self, index: int) -> bool:
        """Exactly floor(n x share) of the first n indexes, spread evenly."""
        return self.share >= 1.0 or int((index + 1) * self.share) > int(index * self.share)


def _clip(f: Feature, v: float) -> float | int:
    if f.min is not None:
        v = max(v, f.min)
    if f.max is not None:
        v = min(v, f.max)
    return int(round(v)) if f.type == "int" else round(float(v), 6)


@dataclass(frozen=True)
class DriftSpec:
    changes: tuple[Change, ...]
    text: str = ""

    @property
    def features(self) -> list[str]:
        return [c.feature.name for c in self.changes]

    @classmethod
    def parse(cls, spec: str, schema: FeatureSchema) -> DriftSpec:
        by_name = {f.name: f for f in schema.features}
        changes: list[Change] = []
        for part in (p.strip() for p in spec.split(",")):
            m = _PART.match(part)
            if not m:
                raise DriftSpecError(f"drift {part!r}: expected name*F, name+X, name=VALUE or name= (@share)")
            name, op, raw = m["name"], m["op"], m["value"].strip()
            f = by_name.get(name)
            if f is None:
                raise DriftSpecError(
                    f"drift {part!r}: no feature {name!r} in {schema.name} ({', '.join(by_name)})"
                )
            share = float(m["share"]) if m["share"] else 1.0
            if not 0 < share <= 1:
                raise DriftSpecError(f"drift {part!r}: the share after @ must be in (0, 1]")
            changes.append(Change(f, *_operation(part, f, op, raw), share))
        if len({c.feature.name for c in changes}) != len(changes):
            raise DriftSpecError(f"drift {spec!r}: a feature is named twice")
        return cls(tuple(changes), spec)

    def apply(self, index: int, event: dict[str, Any]) -> dict[str, Any]:
        """The event with the changes that apply to its index (a new dict; the original is untouched)."""
        out = dict(event)
        for c in self.changes:
            if not c.applies(index):
                continue
            name, f = c.feature.name, c.feature
            if c.op == "-":
                out.pop(name, None)
            elif c.op == "=":
                out[name] = c.value
            elif name in out and out[name] is not None:
                v = out[name] * c.value if c.op == "*" else out[name] + c.value
                out[name] = _clip(f, v)
        return out


def _operation(part: str, f: Feature, op: str, raw: str) -> tuple[str, Any]:
    if op == "=" and raw == "":
        if f.required:
            raise DriftSpecError(
                f"drift {part!r}: {f.name} is required; only optional features can be removed"
            )
        return "-", None
    if op in "*+":
        if f.type not in ("float", "int"):
            raise DriftSpecError(f"drift {part!r}: {op} needs a numeric feature; {f.name} is {f.type}")
        try:
            return op, float(raw)
        except ValueError:
            raise DriftSpecError(f"drift {part!r}: {raw!r} is not a number") from None
    if f.type == "category":
        if raw not in f.categories:
            raise DriftSpecError(
                f"drift {part!r}: {raw!r} is not a category of {f.name} ({', '.join(f.categories)})"
            )
        return "=", raw
    if f.type == "bool":
        if raw not in ("true", "false"):
            raise DriftSpecError(f"drift {part!r}: {f.name} is bool: true or false")
        return "=", raw == "true"
    try:
        return "=", _clip(f, float(raw))
    except ValueError:
        raise DriftSpecError(f"drift {part!r}: {raw!r} is not a number") from None
