"""Synthetic event producer: a PutRecords publisher (batched to AWS limits, failed entries resent,
rate control, optional KPL aggregation), malformed payloads for quarantine tests, and a CLI
(``python -m producer publish|generate``)."""

from producer.publisher import Publisher
from producer.ratelimit import TokenBucket
from producer.records import PublishError, PublishReport, SentRecord, UnsentRecord

__all__ = ["PublishError", "Publisher", "PublishReport", "SentRecord", "TokenBucket", "UnsentRecord"]
