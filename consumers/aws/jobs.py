"""The coordination table of split files (``JOBS_TABLE``, the template's ``JobsTable``): one item per job
(key ``job``, ``item`` = "job") and one per range done (``item`` = "range#00007": its counts and part
sizes). Every step that must happen once is one conditional write:

- ``create``: the job item, if it does not exist (a re-delivered S3 event finds it);
- ``range_done``: ``ADD done :r`` with ``NOT contains(done, :r)``, together with the row counts, in one
  UpdateItem: a re-delivered or duplicate message of a range counts nothing twice; the new item comes back,
  so the worker that completes the last range knows it is the last;
- ``claim``: a lease (``assembly`` or ``scan``) taken with ``attribute_not_exists(<name>_at)`` and an expired
  or absent lease: one assembler at a time, and a crashed one's successor (the re-delivered message, after
  the visibility timeout) takes over once the lease (the function's timeout) has run out;
- ``assembled``: the end, written only by the lease's holder.

The status document (``<output>.status.json``, consumers/core/ranges.py) is a function of the job item;
``publish_status`` writes it and, if the job finished while it wrote, writes the finished state again, so the
last document written is never older than the job's end.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from consumers.core.ranges import STATUS_SUFFIX, JobView, status_document

JOB_ITEM = "job"
JOB_TTL_S = 30 * 24 * 3600  # the table forgets a job after a month (TTL on "expires")


def range_item(index: int) -> str:
    return f"range#{index:05d}"


def _n(v: float | int) -> dict[str, str]:
    return {"N": repr(v) if isinstance(v, float) else str(v)}


def _plain(av: dict[str, Any]) -> Any:
    (kind, v), *_ = av.items()
    if kind == "S":
        return v
    if kind == "N":
        return float(v) if any(c in v for c in ".eE") else int(v)
    if kind == "NS":
        return {int(x) for x in v}
    if kind == "M":
        return {k: _plain(x) for k, x in v.items()}
    if kind == "BOOL":
        return v
    if kind == "NULL":
        return None
    raise ValueError(f"unexpected attribute type {kind}")


def _item(attributes: Any) -> dict[str, Any]:
    """A DynamoDB item (attribute values) as plain values."""
    return {k: _plain(v) for k, v in attributes.items()}


def _placeholders(kind: str, values: dict[str, Any]) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """``#<kind>i`` / ``:<kind>i`` placeholders for attributes named by data: (pairs "#ki :ki", names,
    values), the values as numbers."""
    pairs = [f"#{kind}{i} :{kind}{i}" for i in range(len(values))]
    names = {f"#{kind}{i}": k for i, k in enumerate(values)}
    return pairs, names, {f":{kind}{i}": _n(v) for i, v in enumerate(values.values())}


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class JobTable:
    def __init__(self, ddb: Any, table: str, *, clock: Any = time.time) -> None:
        self.ddb, self.table, self.clock = ddb, table, clock

    def _key(self, job: str, item: str = JOB_ITEM) -> dict[str, Any]:
        return {"job": {"S": job}, "item": {"S": item}}

    def get(self, job: str) -> dict[str, Any] | None:
        resp = self.ddb.get_item(TableName=self.table, Key=self._key(job), ConsistentRead=True)
        return _item(resp["Item"]) if "Item" in resp else None

    def create(self, job: str, fields: dict[str, str | int | float]) -> tuple[dict[str, Any], bool]:
        """The job item, created now (True) or as an earlier delivery created it (False)."""
        now = self.clock()
        item = {
            **self._key(job),
            **{k: ({"S": v} if isinstance(v, str) else _n(v)) for k, v in fields.items()},
            "started_at": _n(now),
            "expires": _n(int(now) + JOB_TTL_S),
            "errors": {"M": {}},
        }
        try:
            self.ddb.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(job)"
            )
            return _item(item), True
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
        existing = self.get(job)
        assert existing is not None
        return existing, False

    def scanned(self, job: str, total: int, header_end: int) -> dict[str, Any]:
        resp = self.ddb.update_item(
            TableName=self.table,
            Key=self._key(job),
            UpdateExpression="SET #t = :t, scanned_at = :now, header_end = :h",
            ExpressionAttributeNames={"#t": "total"},
            ExpressionAttributeValues={":t": _n(total), ":now": _n(self.clock()), ":h": _n(header_end)},
            ReturnValues="ALL_NEW",
        )
        return _item(resp["Attributes"])

    def range_done(
        self, job: str, index: int, counts: dict[str, int], parts: dict[str, int]
    ) -> tuple[dict[str, Any], bool]:
        """Record range ``index`` as done (its counts added once); returns the job item and whether this call
        was the one that counted it."""
        self.ddb.put_item(
            TableName=self.table,
            Item={
                **self._key(job, range_item(index)),
                **{k: _n(v) for k, v in {**counts, **parts}.items()},
                "expires": _n(int(self.clock()) + JOB_TTL_S),
            },
        )
        pairs, names, values = _placeholders("c", counts)
        try:
            resp = self.ddb.update_item(
                TableName=self.table,
                Key=self._key(job),
                UpdateExpression="ADD done :rs, " + ", ".join(pairs) + " DELETE failed :rs",
                ConditionExpression="attribute_exists(job) AND NOT contains(done, :r)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":rs": {"NS": [str(index)]}, ":r": _n(index), **values},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return _item(resp["Attributes"]), True
        except ClientError as exc:
            if not _conditional_failed(exc) or "Item" not in exc.response:
                raise
            return _item(exc.response["Item"]), False  # type: ignore[typeddict-item]

    def range_failed(
        self, job: str, index: int, *, reason: str, detail: str, attempt: int, final: bool
    ) -> dict[str, Any]:
        """Note a failed attempt of a range (the status names it); ``final``: it went to the dead-letter
        queue."""
        error = {
            "M": {
                "reason": {"S": reason},
                "detail": {"S": detail[:500]},
                "attempt": _n(attempt),
                "at": _n(self.clock()),
                "dead_lettered": {"BOOL": final},
            }
        }
        expr = "SET errors.#r = :e" + (" ADD failed :rs" if final else "")
        values: dict[str, Any] = {":e": error}
        if final:
            values[":rs"] = {"NS": [str(index)]}
        resp = self.ddb.update_item(
            TableName=self.table,
            Key=self._key(job),
            UpdateExpression=expr,
            ConditionExpression="attribute_exists(job)",
            ExpressionAttributeNames={"#r": str(index)},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return _item(resp["Attributes"])

    def claim(self, job: str, name: str, token: str, lease_s: float, *, renew: bool = False) -> bool:
        """Take the lease ``name`` ("assembly", "scan") unless that step is done or someone holds it;
        ``renew``: also when ``token`` holds it (a scan going on in another invocation)."""
        now = self.clock()
        held = " OR #tok = :tok" if renew else ""
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key=self._key(job),
                UpdateExpression="SET #tok = :tok, #until = :until",
                ConditionExpression="attribute_exists(job) AND attribute_not_exists(#done) "
                f"AND (attribute_not_exists(#until) OR #until < :now{held})",
                ExpressionAttributeNames={
                    "#tok": f"{name}_token",
                    "#until": f"{name}_until",
                    "#done": f"{name}_at",
                },
                ExpressionAttributeValues={
                    ":tok": {"S": token},
                    ":until": _n(now + lease_s),
                    ":now": _n(now),
                },
            )
            return True
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise

    def finished(self, job: str, name: str, token: str, values: dict[str, int]) -> dict[str, Any] | None:
        """Mark the step ``name`` done (``<name>_at``), by the lease's holder only; None if the lease was
        lost (a successor took over: it writes the same bytes)."""
        pairs, names, placeholders = _placeholders("v", values)
        try:
            resp = self.ddb.update_item(
                TableName=self.table,
                Key=self._key(job),
                UpdateExpression="SET #done = :now"
                + "".join(", " + p.replace(" ", " = ") for p in pairs)
                + " REMOVE #until",
                ConditionExpression="#tok = :tok",
                ExpressionAttributeNames={
                    "#done": f"{name}_at",
                    "#tok": f"{name}_token",
                    "#until": f"{name}_until",
                    **names,
                },
                ExpressionAttributeValues={":now": _n(self.clock()), ":tok": {"S": token}, **placeholders},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return _item(resp["Attributes"])

    def ranges(self, job: str) -> dict[int, dict[str, Any]]:
        """The range items of a job, by index."""
        out: dict[int, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "job = :j AND begins_with(#i, :p)",
            "ExpressionAttributeNames": {"#i": "item"},
            "ExpressionAttributeValues": {":j": {"S": job}, ":p": {"S": "range#"}},
            "ConsistentRead": True,
        }
        while True:
            resp = self.ddb.query(**kwargs)
            for it in resp.get("Items", []):
                out[int(it["item"]["S"].split("#")[1])] = _item(it)
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def view(item: dict[str, Any]) -> JobView:
    return JobView(
        job=item["job"],
        bucket=item["bucket"],
        key=item["key"],
        output_key=item["output_key"],
        rejected_key=item["rejected_key"],
        size=int(item["size"]),
        started_at=float(item["started_at"]),
        total=item.get("total"),
        done=set(item.get("done", ())),
        failed=set(item.get("failed", ())),
        rows=item.get("rows", 0),
        scored=item.get("scored", 0),
        rejected=item.get("rejected", 0),
        items=item.get("items", 0),
        errors={int(k): v for k, v in item.get("errors", {}).items()},
        scanned_at=item.get("scanned_at"),
        assembled_at=item.get("assembly_at"),
        output_bytes=item.get("output_bytes"),
        rejected_bytes=item.get("rejected_bytes"),
    )


def publish_status(s3: Any, jobs: JobTable, item: dict[str, Any]) -> JobView:
    """Write ``<output>.status.json`` for ``item``; if the job ended meanwhile, write the end too (the last
    document is never older than the end, whatever the order of concurrent writers)."""
    job = view(item)
    key = job.output_key + STATUS_SUFFIX
    s3.put_object(Bucket=job.bucket, Key=key, Body=status_document(job), ContentType="application/json")
    if job.state != "done":
        latest = jobs.get(job.job)
        if latest is not None and view(latest).state == "done":
            job = view(latest)
            s3.put_object(
                Bucket=job.bucket, Key=key, Body=status_document(job), ContentType="application/json"
            )
    return job
