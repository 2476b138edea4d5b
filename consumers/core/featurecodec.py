"""How feature values are stored in the shared cache: compact, versioned, checked on the way back.

Key: ``<namespace>:<version>:<entity id>``. The version is a CRC-32 of the codec's format number, the schema
name, the key field and each enrichable feature's name, type and categories, so any change to what is
cached (a feature added, a type changed, a category list edited) reads other keys: a schema change can never
read a stale shape, and the old entries expire with their TTL.
Value: orjson of a JSON array in feature order, ``null`` where the source had no value (e.g.
``[52.5,null]`` for two features: ~12 bytes against ~60 for an object with names); a cached "the source
does not have this entity" is ``0``. A value that does not decode to that shape, or holds a value of the
wrong type, is a miss (counted as invalid), never trusted.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from consumers.core.enrichment import Values, python_converter
from consumers.core.schema import Feature

FORMAT = 1
NOT_FOUND = b"0"


class FeatureCodec:
    def __init__(
        self, schema_name: str, key_field: str, features: Sequence[Feature], namespace: str = "feat"
    ):
        shape = "|".join(
            [str(FORMAT), schema_name, key_field]
            + [f"{f.name}:{f.type}:{','.join(f.categories or ())}" for f in features]
        )
        self.version = f"{zlib.crc32(shape.encode()):08x}"
        self.prefix = f"{namespace}:{self.version}:"
        self.names = tuple(f.name for f in features)
        self._convert = tuple(python_converter(f) for f in features)

    def key(self, entity: str) -> str:
        return self.prefix + entity

    def encode(self, values: Values | None) -> bytes:
        if values is None:
            return NOT_FOUND
        return orjson.dumps([values.get(n) for n in self.names])

    def decode(self, raw: bytes) -> Values | None:
        """The values a stored entry holds (None: "not found"); ValueError if it is not this shape."""
        if raw == NOT_FOUND:
            return None
        try:
            arr: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError("not JSON") from None
        if type(arr) is not list or len(arr) != len(self.names):
            raise ValueError("not this codec's shape")
        out: Values = {}
        for name, conv, v in zip(self.names, self._convert, arr, strict=True):
            if v is not None:
                try:
                    out[name] = conv(v)
                except (TypeError, ValueError):
                    raise ValueError(f"{name}: wrong type") from None
        return out
