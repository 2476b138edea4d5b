"""One ``event_id``, two contents: counted, never silent.

A score item is keyed by ``event_id`` alone, so two different events that a producer gave the same id (a bug,
a reused id, two applications sharing a key space) overwrite each other. Re-deliveries and producer retries
are not collisions: they carry the same bytes. Every item therefore stores ``content``, a fingerprint of the
record's data (``content_digest``), and a collision is an overwrite whose two fingerprints differ:

- within one batch: two records with one id (the highest position wins the item; ``in_batch`` counts the
  losers whose bytes differ from the winner's), counted by the pipeline;
- across batches and shards: the table's stream (NEW_AND_OLD_IMAGES) gives each overwrite with the item
  before and after; ``overwrites`` finds those whose fingerprints differ (``consumers.collision_handler``,
  on Lambda with an event filter so only MODIFY records invoke it).

Both are reported by position only (shard, sequence number, sub-sequence number): never the id or the data.
The fingerprint is CRC-32: a detector, not a proof of identity (two different contents agree with probability
2^-32, so at most that share of collisions goes uncounted). It costs ~0.3 us a record where SHA-256 costs
~1 us (the whole feature, at 4,300 records a batch: benchmarks/results/ab_collisions.json).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from consumers.core.types import Overwrite, Position

CONTENT_ATTR = "content"


def content_digest(data: bytes) -> str:
    """The record's fingerprint as stored in its item: its CRC-32 in hex (``0x9f0c21aa``)."""
    return hex(zlib.crc32(data))


def _position(image: Mapping[str, Any]) -> Position | None:
    try:
        sub = image.get("sub_sequence_number")
        return Position(
            image["shard_id"]["S"],
            image["sequence_number"]["S"],
            int(sub["N"]) if sub is not None else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _content(image: Mapping[str, Any]) -> str | None:
    value = image.get(CONTENT_ATTR)
    return value.get("S") if isinstance(value, Mapping) else None


def overwrites(records: Iterable[Mapping[str, Any]]) -> list[Overwrite]:
    """The collisions among a DynamoDB stream batch: MODIFY records whose old and new items have different
    fingerprints. An item written before fingerprints existed (no ``content``) is not judged."""
    found: list[Overwrite] = []
    for record in records:
        if record.get("eventName") != "MODIFY":
            continue
        change = record.get("dynamodb") or {}
        old, new = change.get("OldImage") or {}, change.get("NewImage") or {}
        before, after = _content(old), _content(new)
        if before is None or after is None or before == after:
            continue
        old_pos, new_pos = _position(old), _position(new)
        if old_pos is not None and new_pos is not None:
            found.append(Overwrite(old_pos, new_pos))
    return found
