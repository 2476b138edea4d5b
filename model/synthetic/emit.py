"""Schema-driven emission and chunked generation: ``generate_events`` and ``generate_labelled``.

Turns the world of each ``CHUNK`` (``world``) into events that follow ``features.json``, and labels them;
both rules are documented in the ``model.synthetic`` docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from consumers.core.schema import Feature, FeatureSchema
from model.synthetic.params import _CHUNK_TAG, CHUNK
from model.synthetic.world import _accounts, _known, _sigmoid, _world


# --- schema-driven emission ----------------------------------------------------------------------
def _uniform(rng: np.random.Generator, f: Feature, n: int) -> np.ndarray:
    """Values for a feature the process does not know, from its type and bounds alone."""
    if f.type == "bool":
        return rng.random(n) < 0.5
    if f.type == "category":
        return np.array(f.categories, dtype=object)[rng.integers(0, len(f.categories), n)]
    lo = 0.0 if f.min is None else f.min
    hi = lo + 100.0 if f.max is None else f.max
    if f.type == "int":
        return rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, n)
    return np.round(rng.uniform(lo, hi, n), 4)


def _column(
    rng: np.random.Generator, f: Feature, world: dict[str, Any], n: int
) -> tuple[list[Any], np.ndarray | None]:
    """One schema feature as a list of JSON-typed Python values, and its missing mask (None: none missing)."""
    values, known = world.get(f.name, (None, None))
    if values is None:
        values, known = _uniform(rng, f, n), (_known(rng, 0.9, n) if not f.required else None)
    if known is not None and f.required:  # the schema insists: fill what the process does not know
        values = np.where(known, values, _uniform(rng, f, n))
        known = None
    if f.type == "category":
        listed = np.isin(values, f.categories)
        if not listed.all():
            values = np.where(listed, values, _uniform(rng, f, n))
        out = values.tolist()
    elif f.type == "bool":
        out = values.astype(bool).tolist()
    else:
        arr = values.astype(np.float64)
        if f.min is not None or f.max is not None:
            arr = np.clip(arr, f.min, f.max)
        if f.type == "int":
            lo = None if f.min is None else np.ceil(f.min)
            hi = None if f.max is None else np.floor(f.max)
            out = np.clip(np.rint(arr), lo, hi).astype(np.int64).tolist()
        else:
            out = arr.tolist()
    return out, (None if known is None or known.all() else ~known)


def _chunk(
    schema: FeatureSchema, acc: dict[str, np.ndarray], seed: int, c: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Events and labels for indices [c * CHUNK, (c + 1) * CHUNK)."""
    rng = np.random.default_rng([seed, _CHUNK_TAG, c])
    n = CHUNK
    world, z = _world(rng, acc, n)
    labels = (rng.random(n) < _sigmoid(z)).astype(np.int8)
    first = c * CHUNK
    keys = [schema.id_field, "account_id", "event_time"]
    cols: list[list[Any]] = [
        [f"evt-{seed}-{first + i:010d}" for i in range(n)],
        world["account_id"][0].tolist(),
        world["event_time"][0].tolist(),
    ]
    missing: list[tuple[str, list[int]]] = []  # (feature, rows where it is absent)
    for f in schema.features:
        col, miss = _column(rng, f, world, n)
        keys.append(f.name)
        cols.append(col)
        if miss is not None:
            missing.append((f.name, np.flatnonzero(miss).tolist()))
    events = [dict(zip(keys, row)) for row in zip(*cols)]
    for name, rows in missing:  # absent, not null: optional fields are left out (features.json)
        for i in rows:
            del events[i][name]
    return events, labels


def _generate(
    schema: FeatureSchema, n: int, seed: int, start_index: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if n < 0 or start_index < 0:
        raise ValueError(f"n and start_index must be >= 0, got n={n}, start_index={start_index}")
    if n == 0:
        return [], np.zeros(0, dtype=np.int8)
    acc = _accounts(int(seed))
    first, last = start_index // CHUNK, (start_index + n - 1) // CHUNK
    events: list[dict[str, Any]] = []
    labels: list[np.ndarray] = []
    for c in range(first, last + 1):
        ev, lab = _chunk(schema, acc, int(seed), c)
        lo = start_index - c * CHUNK if c == first else 0
        hi = start_index + n - c * CHUNK if c == last else CHUNK
        events.extend(ev[lo:hi])
        labels.append(lab[lo:hi])
    return events, np.concatenate(labels)


def generate_events(
    schema: FeatureSchema, n: int, seed: int = 0, *, start_index: int = 0
) -> list[dict[str, Any]]:
    """``n`` valid events for indices ``start_index .. start_index + n - 1`` of the stream for ``seed``.

    Deterministic per (seed, index), so a producer can resume at any index and get the same events.
    """
    return _generate(schema, n, seed, start_index)[0]


def generate_labelled(schema: FeatureSchema, n: int, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The first ``n`` events for ``seed`` and their 0/1 fraud labels (int8), as documented above."""
    return _generate(schema, n, seed, 0)
