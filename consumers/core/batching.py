"""Packing items into service calls that cap both the count and the bytes of a call: DynamoDB's
BatchWriteItem (25 items, 16 MB), SQS's SendMessageBatch (10 entries, 256 KiB) and EventBridge's PutEvents
(10 entries, 256 KB). One packer for the three, so the boundary rules are written (and tested) once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def packed(
    items: Iterable[T], size: Callable[[T], int], *, max_count: int, max_bytes: int
) -> Iterator[list[T]]:
    """``items`` in order, lazily, in lists of at most ``max_count`` items whose ``size`` adds up to at most
    ``max_bytes``; an item that alone exceeds ``max_bytes`` gets a list of its own (the service refuses it
    for its own size, never its neighbours)."""
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and (len(batch) == max_count or total + n > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch
