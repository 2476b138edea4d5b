"""``Poller``: the event-source mapping of one stream. It lists the shards (at start and periodically), runs a
``ShardReader`` thread per shard and ``ParallelizationFactor`` slot threads per shard, whose batches an
``Invoker`` delivers to the function (see the package docstring)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.errors import error_code
from consumers.core.limits import KINESIS_GET_RECORDS_MAX_RECORDS
from consumers.core.retry import Backoff
from sam.local.context import LambdaContext
from sam.local.poller.control import Control, PollerError
from sam.local.poller.invoke import BatchResult, Handler, Invoker
from sam.local.poller.onfailure import OnFailure, OnFailureMessage
from sam.local.poller.reader import ShardReader
from sam.local.poller.settings import EventSourceSettings
from sam.local.poller.slots import Rec, Shard, Slot, Unit
from sam.local.poller.stats import PollerStats

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_kinesis.type_defs import ShardTypeDef
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger("sam.local.poller")  # one logger for the package (sam.local.soak sets its level)


def _default_context_factory(settings: EventSourceSettings, region: str) -> Callable[[], LambdaContext]:
    def make() -> LambdaContext:
        return LambdaContext(
            timeout_ms=settings.function_timeout_s * 1000,
            function_name=settings.function_name,
            memory_limit_in_mb=settings.memory_mb,
            region=region,
        )

    return make


class Poller:
    """Reads every shard of ``stream_name`` and invokes ``handler(event, context)`` like Lambda's ESM.

    ``start()``/``stop()``, or ``run(stop_event)`` (blocks until the event is set), or
    ``run_until_idle(idle_s, timeout_s)`` (tests, scripts: stop once every shard is drained and nothing
    happened for ``idle_s``). ``stats`` is live (thread-safe); ``on_batch(BatchResult)`` is called after
    each invocation, from the slot's thread.
    """

    def __init__(
        self,
        kinesis_client: KinesisClient,
        stream_name: str,
        handler: Handler,
        settings: EventSourceSettings,
        *,
        sqs_client: SQSClient | None = None,
        on_failure_queue_url: str | None = None,
        context_factory: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.time,
        on_batch: Callable[[BatchResult], object] | None = None,
        poll_interval_s: float = 0.25,
        discovery_interval_s: float = 5.0,
        serialize_invocations: bool = True,
        retry_backoff: Backoff | None = None,
        read_backoff: Backoff | None = None,
        get_records_limit: int | None = None,
        max_buffered_records: int | None = None,
    ) -> None:
        if on_failure_queue_url and sqs_client is None:
            raise ValueError("on_failure_queue_url needs an sqs_client")
        self.kinesis = kinesis_client
        self.stream_name = stream_name
        self.handler = handler
        self.settings = settings
        self.sqs = sqs_client
        self.on_failure_queue_url = on_failure_queue_url
        # getattr: a test's stand-in for the client may have no meta.
        region: str | None = getattr(getattr(kinesis_client, "meta", None), "region_name", None)
        self.region = region or "us-east-1"
        self.context_factory = context_factory or _default_context_factory(settings, self.region)
        self.clock = clock
        self.on_batch = on_batch
        self.poll_interval_s = poll_interval_s
        self.discovery_interval_s = discovery_interval_s
        self.retry_backoff = retry_backoff or Backoff(base_s=0.05, cap_s=1.0, max_attempts=1_000_000)
        self.read_backoff = read_backoff or Backoff(base_s=0.1, cap_s=2.0, max_attempts=1_000_000)
        self.limit = get_records_limit or min(KINESIS_GET_RECORDS_MAX_RECORDS, max(settings.batch_size, 1000))
        self.buffer_cap = max_buffered_records or max(2 * settings.batch_size, self.limit)
        self.stats = PollerStats()
        self.stream_arn = ""
        self._control = Control()
        self._shards: dict[str, Shard] = {}
        self._shards_lock = threading.Lock()
        self._rediscover = threading.Event()
        self._discovery: threading.Thread | None = None
        self._started = False
        self._failures = OnFailure(
            sqs_client,
            on_failure_queue_url,
            region=self.region,
            function_name=settings.function_name,
            stats=self.stats,
            control=self._control,
            backoff=self.retry_backoff,
            clock=clock,
        )
        self._invoker = Invoker(
            handler,
            settings,
            stats=self.stats,
            control=self._control,
            failures=self._failures,
            context_factory=self.context_factory,
            clock=clock,
            on_batch=on_batch,
            invoke_lock=threading.Lock() if serialize_invocations else None,
            retry_backoff=self.retry_backoff,
        )
        self._reader = ShardReader(
            kinesis_client,
            stream_name,
            settings,
            region=self.region,
            stats=self.stats,
            control=self._control,
            read_backoff=self.read_backoff,
            limit=self.limit,
            poll_interval_s=poll_interval_s,
            parents_finished=self._parents_finished,
            rediscover=self._rediscover,
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Poller:
        if self._started:
            raise RuntimeError("a Poller starts once")
        self._started = True
        summary = self.kinesis.describe_stream_summary(StreamName=self.stream_name)[
            "StreamDescriptionSummary"
        ]
        self.stream_arn = self._reader.stream_arn = self._failures.stream_arn = summary["StreamARN"]
        self._discover(initial=True)
        self._discovery = threading.Thread(target=self._discovery_loop, name="poller-discovery", daemon=True)
        self._discovery.start()
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """Every shard present at start has its first iterator (with LATEST: records put from now on are
        read)."""
        end = time.monotonic() + timeout_s
        with self._shards_lock:
            shards = [s for s in self._shards.values() if s.initial]
        for s in shards:
            while not s.ready.wait(0.05):
                if self._control.error is not None or time.monotonic() > end:
                    return False
                if not s.started and not self._parents_finished(s):
                    break  # a child: read after its parents, not at start
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Set the stop flag, let in-flight invocations finish, join the threads."""
        self._control.stopping.set()
        self._rediscover.set()
        end = time.monotonic() + timeout_s
        threads: list[threading.Thread | None] = [self._discovery] if self._discovery else []
        with self._shards_lock:
            for s in self._shards.values():
                threads.extend([s.thread] + [sl.thread for sl in s.slots])
        for t in threads:
            if t is not None and t.is_alive():
                t.join(max(0.0, end - time.monotonic()))
        alive = [t.name for t in threads if t is not None and t.is_alive()]
        if alive:
            log.warning("poller threads still running after %.0f s: %s", timeout_s, ", ".join(alive))

    @property
    def error(self) -> BaseException | None:
        return self._control.error

    def run(self, stop_event: threading.Event) -> PollerStats:
        """Poll until ``stop_event`` is set (or a fatal error), then stop cleanly."""
        self.start()
        try:
            while not stop_event.wait(0.2):
                if self._control.error is not None:
                    break
        finally:
            self.stop()
        self._raise_error()
        return self.stats

    def drained(self) -> bool:
        """Nothing left to do right now: every shard finished or caught up, every slot idle."""
        with self._shards_lock:
            shards = list(self._shards.values())
        for s in shards:
            if s.finished:
                continue
            if not s.started:
                if self._parents_finished(s):
                    return False  # about to start
                continue
            if not s.caught_up or not all(sl.idle() for sl in s.slots):
                return False
        return True

    def wait_idle(
        self, idle_s: float = 1.0, timeout_s: float | None = None, stop_event: threading.Event | None = None
    ) -> bool:
        """Wait until ``drained()`` has held for ``idle_s`` with no activity. False on timeout/stop/error."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        since: float | None = None
        while True:
            if self._control.error is not None or (stop_event is not None and stop_event.is_set()):
                return False
            now = time.monotonic()
            if self.drained():
                since = since or now
                if now - since >= idle_s and now - self._control.last_activity >= idle_s:
                    return True
            else:
                since = None
            if end is not None and now > end:
                return False
            time.sleep(min(0.05, idle_s / 4))

    def run_until_idle(self, idle_s: float = 1.0, timeout_s: float | None = 60.0) -> bool:
        """Start, wait until drained and idle for ``idle_s`` (True) or ``timeout_s`` passed (False), stop."""
        self.start()
        try:
            ok = self.wait_idle(idle_s, timeout_s)
        finally:
            self.stop()
        self._raise_error()
        return ok

    def _raise_error(self) -> None:
        error = self._control.error
        if error is not None:
            raise PollerError(f"poller stopped: {error}") from error

    def on_failure_message(
        self, shard_id: str, recs: list[Rec], condition: str, unit: Unit
    ) -> OnFailureMessage:
        """The metadata Lambda sends to an on-failure destination (kinesis-on-failure-destination)."""
        return self._failures.message(shard_id, recs, condition, unit)

    # -- shards ----------------------------------------------------------------------------------
    def _list_shards(self) -> list[ShardTypeDef]:
        shards: list[ShardTypeDef] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            shards.extend(page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}  # ListShards: NextToken excludes StreamName

    def _discover(self, initial: bool = False) -> None:
        listed = self._list_shards()
        new: list[tuple[Shard, threading.Thread]] = []
        with self._shards_lock:
            for d in listed:
                sid = d["ShardId"]
                closed = "EndingSequenceNumber" in d.get("SequenceNumberRange", {})
                s = self._shards.get(sid)
                if s is not None:
                    s.closed = s.closed or closed
                    continue
                parents = [p for p in (d.get("ParentShardId"), d.get("AdjacentParentShardId")) if p]
                s = Shard(sid, parents, closed, initial)
                s.slots = [
                    Slot(s, i, self.buffer_cap, self.settings, self._control, self._invoker.process)
                    for i in range(self.settings.parallelization_factor)
                ]
                thread = threading.Thread(
                    target=self._reader.read, args=(s,), name=f"read-{sid[-4:]}", daemon=True
                )
                s.thread = thread
                self._shards[sid] = s
                new.append((s, thread))
        for s, thread in new:
            log.info("shard %s found (parents: %s)", s.id, ", ".join(s.parents) or "none")
            thread.start()

    def _discovery_loop(self) -> None:
        stopping = self._control.stopping
        while not stopping.is_set():
            self._rediscover.wait(self.discovery_interval_s)
            self._rediscover.clear()
            if stopping.is_set():
                return
            try:
                self._discover()
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code == "ResourceNotFoundException":
                    self._control.fail(exc)
                    return
                log.warning("ListShards failed (%s); retrying at the next discovery", code)

    def _parents_finished(self, s: Shard) -> bool:
        with self._shards_lock:
            # A parent that ListShards no longer shows is past the retention period: nothing left to read.
            return all(p not in self._shards or self._shards[p].finished for p in s.parents)
