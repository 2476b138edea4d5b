"""Synthetic event producer: a PutRecords publisher (batched to AWS limits, failed entries resent,
rate control, optional KPL aggregation), malformed payloads for quarantine tests, and a CLI
(``python -m producer publish|generate``)."""

from producer.publisher import Publisher, PublishError, PublishReport, SentRecord, UnsentRecord
from producer.ratelimit import TokenBucket

__all__ = ["PublishError", "Publisher", "PublishReport", "SentRecord", "TokenBucket", "UnsentRecord"]
