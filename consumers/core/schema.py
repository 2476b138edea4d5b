"""The feature schema (``features.json``): the one contract read by the producer, the consumer and training.

Format::

    {"schema_version": 1, "name": "...", "id_field": "event_id", "id_max_length": 512,
     "features": [{"name": "amount", "type": "float", "required": true, "min": 0, "max": 1e6, "doc": "..."},
                  {"name": "channel", "type": "category", "required": true, "categories": ["pos", ...]}, ...]}

Types and their encoding in the float32 matrix (column order = list order):
``float`` (JSON number), ``int`` (JSON integer), ``bool`` (true/false -> 1/0),
``category`` (one of ``categories`` -> its index). A missing optional field (absent or null) is NaN,
which XGBoost treats as missing. ``min``/``max`` are inclusive bounds for float and int.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.core.errors import SchemaError

FEATURE_TYPES = ("float", "int", "bool", "category")


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    type: str
    required: bool
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    doc: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.categories:
            out["categories"] = list(self.categories)
        out["doc"] = self.doc
        return out


@dataclass(frozen=True, slots=True)
class FeatureSchema:
    name: str
    id_field: str
    id_max_length: int
    features: tuple[Feature, ...]
    schema_version: int = 1

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> FeatureSchema:
        def bad(msg: str) -> SchemaError:
            return SchemaError(f"invalid feature schema {source}: {msg}")

        if not isinstance(raw, dict):
            raise bad("top level must be an object")
        if raw.get("schema_version") != 1:
            raise bad(f"unsupported schema_version {raw.get('schema_version')!r} (expected 1)")
        id_field = raw.get("id_field")
        if not isinstance(id_field, str) or not id_field:
            raise bad("id_field must be a non-empty string")
        id_max = raw.get("id_max_length", 512)
        if isinstance(id_max, bool) or not isinstance(id_max, int) or not 1 <= id_max <= 2048:
            raise bad("id_max_length must be an integer in 1..2048 (DynamoDB partition key limit)")
        items = raw.get("features")
        if not isinstance(items, list) or not items:
            raise bad("features must be a non-empty list")
        features: list[Feature] = []
        seen: set[str] = set()
        for i, f in enumerate(items):
            where = f"features[{i}]"
            if not isinstance(f, dict):
                raise bad(f"{where} must be an object")
            name, ftype = f.get("name"), f.get("type")
            if not isinstance(name, str) or not name:
                raise bad(f"{where}.name must be a non-empty string")
            if name in seen or name == id_field:
                raise bad(f"{where}.name {name!r} is duplicated or equals id_field")
            seen.add(name)
            if ftype not in FEATURE_TYPES:
                raise bad(f"{where} ({name}): type must be one of {FEATURE_TYPES}, got {ftype!r}")
            required = f.get("required", True)
            if not isinstance(required, bool):
                raise bad(f"{where} ({name}): required must be true or false")
            lo, hi = f.get("min"), f.get("max")
            for label, v in (("min", lo), ("max", hi)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise bad(f"{where} ({name}): {label} must be a number")
            if (lo is not None or hi is not None) and ftype not in ("float", "int"):
                raise bad(f"{where} ({name}): min/max apply to float and int only")
            if lo is not None and hi is not None and lo > hi:
                raise bad(f"{where} ({name}): min > max")
            cats = f.get("categories")
            if ftype == "category":
                if (
                    not isinstance(cats, list)
                    or not cats
                    or not all(isinstance(c, str) for c in cats)
                    or len(set(cats)) != len(cats)
                ):
                    raise bad(f"{where} ({name}): categories must be a non-empty list of distinct strings")
            elif cats is not None:
                raise bad(f"{where} ({name}): categories apply to type category only")
            features.append(
                Feature(
                    name=name,
                    type=ftype,
                    required=required,
                    min=None if lo is None else float(lo),
                    max=None if hi is None else float(hi),
                    categories=tuple(cats or ()),
                    doc=str(f.get("doc", "")),
                )
            )
        return cls(
            name=str(raw.get("name", "")), id_field=id_field, id_max_length=id_max, features=tuple(features)
        )

    @classmethod
    def load(cls, path: str | Path) -> FeatureSchema:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"cannot read feature schema {path}: {exc}") from exc
        return cls.from_dict(raw, source=str(path))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "id_field": self.id_field,
            "id_max_length": self.id_max_length,
            "features": [f.to_json() for f in self.features],
        }
