"""Lambda entry point of the collision detector: ``consumers.collision_handler.lambda_handler``, subscribed to
the scores table's stream (NEW_AND_OLD_IMAGES) with an event filter that lets only MODIFY records through, so
first writes (nearly every item) never invoke it and a quiet stream costs nothing.

For each overwrite whose old and new items carry different content fingerprints (one ``event_id`` on two
shards, or in two batches, with other bytes; consumers/core/collisions.py) it counts ``EventIdCollisions`` and
logs both positions. It reads only the stream records it is given: no client, no runtime to build, and it
never fails a batch (a record it cannot read is not judged), so it never holds the table's stream back.
"""

from __future__ import annotations

from typing import Any

from consumers.bootstrap import lambda_entry, report_collisions
from consumers.core.collisions import overwrites


def handle(event: dict[str, Any]) -> dict[str, Any]:
    found = overwrites(event.get("Records") or [])
    report_collisions(found, where="table")
    return {"batchItemFailures": []}


@lambda_entry
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event)
