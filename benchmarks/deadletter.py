"""Dead-letter amplification and planning cost for the hostile KPL aggregates of issue 11 (one aggregate of
many malformed sub-records sharing one partition key), through the real codec, decoder and planner:

    .venv/bin/python -m benchmarks.deadletter

Per case: the record's size, the messages planned, their body bytes and the ratio to the record (the bound
``consumers.core.deadletter.AMPLIFICATION`` x input + ``MESSAGE_OVERHEAD`` per message), SendMessageBatch
calls, the planner's CPU and its traced peak memory. Writes ``results/deadletter.json``.
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from typing import Any

from benchmarks.common import RESULTS, log
from consumers.aws.sqs import batches
from consumers.core import deadletter, kpl
from consumers.core.decode import decode_event
from tests.helpers import event_of

CASES = [(9_900, 95_000), (40, 900_000), (120_000, 1), (3_000, 2_000)]  # (sub-records, key characters)


def measure(subrecords: int, key_chars: int) -> dict[str, Any]:
    blob = kpl.aggregate([("p" * key_chars, b"%d" % (i % 10)) for i in range(subrecords)])
    rejected = list(decode_event(event_of([blob]), max_event_bytes=64 * 1024).rejected)
    tracemalloc.start()
    cpu = time.process_time()
    messages = body_bytes = calls = 0
    for batch in batches(deadletter.plan(rejected, "arn:aws:kinesis:us-east-1:123456789012:stream/events")):
        calls += 1
        messages += len(batch)
        body_bytes += sum(len(m.body) for m in batch)
    cpu = time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    bound = deadletter.AMPLIFICATION * len(blob) + deadletter.MESSAGE_OVERHEAD * messages
    return {
        "subrecords": subrecords, "key_chars": key_chars, "record_bytes": len(blob), "messages": messages,
        "send_calls": calls, "body_bytes": body_bytes, "ratio": round(body_bytes / len(blob), 2),
        "within_bound": body_bytes <= bound, "plan_cpu_ms": round(cpu * 1000, 1),
        "traced_peak_mib": round(peak / 2**20, 1),
    }  # fmt: skip


def main() -> int:
    rows = [measure(n, k) for n, k in CASES]
    for r in rows:
        log(
            f"{r['subrecords']:>7} sub-records, key {r['key_chars']:>7} chars,"
            f" record {r['record_bytes']:>8} B -> {r['messages']:>3} messages in {r['send_calls']:>2} calls,"
            f" {r['body_bytes']:>9} B"
            f" ({r['ratio']}x), plan {r['plan_cpu_ms']} ms CPU, peak {r['traced_peak_mib']} MiB"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deadletter.json").write_text(json.dumps({"cases": rows}, indent=1) + "\n")
    return 0 if all(r["within_bound"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
