"""The DynamoDB write path alone: client CPU per BatchWriteItem(25), where botocore's time goes, and the
wall time of 10,000 items at 10 ms service latency.

    taskset -c 0 .venv/bin/python -m benchmarks.write_path [--requests 400] [--repeat 5]

The endpoint is benchmarks/fake_ddb.py in its own process on the other core: it answers instantly (or after
10 ms), so what is measured is the client. Items are built once (``sink.build_items``: the typed items the
handler sends) and not counted, except for the resource ``batch_writer`` variant, which is given Python
values and converts them itself, as the tutorials use it. Writes ``benchmarks/results/write_path.json``.

Variants (all over keep-alive HTTP/1.1 to 127.0.0.1):
  botocore_default         boto3 client, default config (retries off as in the handler), typed items
  botocore_no_validation   + ``parameter_validation=False``
  resource_batch_writer    boto3 resource ``Table.batch_writer()`` with Python values (Decimal)
  botocore_threads4        the default client on a 4-thread pool (the handler's DynamoDBSink)
  lean_sigv4auth_urllib3   orjson body, botocore ``SigV4Auth`` on an ``AWSRequest``, urllib3 keep-alive pool
  lean_sigv4auth_httpclient  the same over ``http.client``
  lean_signer_httpclient   orjson, ``sigv4.SigV4Signer`` (cached signing key), ``http.client``
  lean                     orjson, ``SigV4Signer``, ``http1.RawConnection``: what LeanDynamoDBSink ships
  lean_threads4            the same on a 4-thread pool
aiodynamo is not installed in this environment (nothing is pip-installed for benchmarks): not measured here.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import RESULTS, aws_env, endpoint, log, machine, pin, sample_rows
from benchmarks.transports import HTTPClientConnection


def _session(url: str):
    import boto3

    env = aws_env(url)
    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
        region_name=env["AWS_REGION"],
    )


def _client(url: str, **config: Any):
    from botocore.config import Config

    cfg = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=3,
        read_timeout=10,
        max_pool_connections=16,
        tcp_keepalive=True,
        **config,
    )
    return _session(url).client("dynamodb", endpoint_url=url, config=cfg)


# -- lean variants built from the shipped class -----------------------------------------------------
def _lean(url: str, variant: str, executor: ThreadPoolExecutor | None = None):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    from consumers.aws import lean_dynamodb as ddb_http
    from consumers.aws import sigv4
    from consumers.core.retry import Backoff

    class SigV4AuthSink(ddb_http.LeanDynamoDBSink):
        def request_headers(self, body: bytes) -> dict[str, str]:
            req = AWSRequest(
                method="POST",
                url=self.endpoint,
                data=body,
                headers={"X-Amz-Target": ddb_http.TARGET, "Content-Type": sigv4.CONTENT_TYPE},
            )
            SigV4Auth(self.credentials.get_frozen_credentials(), "dynamodb", self.signer.region).add_auth(req)
            headers = dict(req.headers.items())
            headers["Host"] = self.host
            headers["User-Agent"] = "lean-bench"
            return headers

    class Urllib3Connection:
        def __init__(self, host: str, port: int, ssl_context: Any, connect_timeout_s: float) -> None:
            import urllib3

            self.pool = urllib3.HTTPConnectionPool(host, port, maxsize=1, retries=False)

        def close(self) -> None:
            self.pool.close()

        def exchange(self, path: str, headers: dict[str, str], body: bytes, timeout: float):
            r = self.pool.urlopen(
                "POST", path, body=body, headers=headers, retries=False, timeout=timeout, preload_content=True
            )
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.data, True

    client = _client(url)
    kw: dict[str, Any] = {"backoff": Backoff(), "executor": executor}
    if variant == "lean_sigv4auth_urllib3":
        return SigV4AuthSink(client, "scores", transport=Urllib3Connection, **kw)
    if variant == "lean_sigv4auth_httpclient":
        return SigV4AuthSink(client, "scores", transport=HTTPClientConnection, **kw)
    if variant == "lean_signer_httpclient":
        return ddb_http.LeanDynamoDBSink(client, "scores", transport=HTTPClientConnection, **kw)
    return ddb_http.LeanDynamoDBSink(client, "scores", **kw)


def _python_items(items: list[dict]) -> list[dict]:
    """Typed items back to the Python values a tutorial passes to ``Table.put_item``/``batch_writer``."""
    from boto3.dynamodb.types import TypeDeserializer

    des = TypeDeserializer()
    return [{k: des.deserialize(v) for k, v in item.items()} for item in items]


def variant_runner(
    name: str, url: str, chunks: list[list[dict]]
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(run all chunks once, cleanup) for a variant."""
    from consumers.aws.dynamodb import DynamoDBSink
    from consumers.core.retry import Backoff, Deadline

    reqs = [[{"PutRequest": {"Item": i}} for i in c] for c in chunks]
    if name in ("botocore_default", "botocore_no_validation"):
        client = _client(url, parameter_validation=(name == "botocore_default"))

        def run() -> None:
            for r in reqs:
                client.batch_write_item(RequestItems={"scores": r})

        return run, client.close
    if name == "resource_batch_writer":
        table = _session(url).resource("dynamodb", endpoint_url=url).Table("scores")
        py_items = _python_items([i for c in chunks for i in c])

        def run() -> None:
            with table.batch_writer() as bw:
                for item in py_items:
                    bw.put_item(Item=item)

        return run, lambda: None
    if name == "botocore_threads4":
        ex = ThreadPoolExecutor(4)
        sink = DynamoDBSink(_client(url), "scores", backoff=Backoff(), executor=ex)

        def run() -> None:
            list(ex.map(lambda c: sink._write_chunk(c, Deadline(60)), chunks))

        return run, ex.shutdown
    ex = ThreadPoolExecutor(4) if name.endswith("threads4") else None
    sink = _lean(url, name.removesuffix("_threads4"), ex)

    def run_lean() -> None:
        if ex is None:
            for c in chunks:
                sink._write_chunk(c, Deadline(60))
        else:
            list(ex.map(lambda c: sink._write_chunk(c, Deadline(60)), chunks))

    return run_lean, (ex.shutdown if ex else sink.close)


VARIANTS = [
    "botocore_default",
    "botocore_no_validation",
    "resource_batch_writer",
    "botocore_threads4",
    "lean_sigv4auth_urllib3",
    "lean_sigv4auth_httpclient",
    "lean_signer_httpclient",
    "lean",
    "lean_threads4",
]


def measure(run: Callable[[], None], repeat: int) -> tuple[list[float], list[float]]:
    run()  # warm-up: connections, caches
    cpus, walls = [], []
    for _ in range(repeat):
        gc.collect()
        w, c = time.perf_counter(), time.process_time()
        run()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return cpus, walls


# -- where botocore's time goes ------------------------------------------------------------------------
PROFILE_BUCKETS = [  # (bucket, file suffix, function): disjoint parts of one client call
    ("parameter validation", "botocore/validate.py", "validate"),
    ("serialization (JSON)", "botocore/serialize.py", "serialize_to_request"),
    ("endpoint rules", "botocore/client.py", "_resolve_endpoint_ruleset"),
    ("param hooks (before-parameter-build)", "botocore/client.py", "_emit_api_params"),
    ("signing (SigV4Auth)", "botocore/signers.py", "sign"),
    ("HTTP send/receive (urllib3)", "botocore/endpoint.py", "_send"),
    ("response parsing", "botocore/parsers.py", "parse"),
]


def profile_botocore(url: str, chunks: list[list[dict]], per_request_ms: float) -> dict:
    client = _client(url)
    reqs = [[{"PutRequest": {"Item": i}} for i in c] for c in chunks]
    for r in reqs[:20]:
        client.batch_write_item(RequestItems={"scores": r})
    prof = cProfile.Profile()
    prof.enable()
    for r in reqs:
        client.batch_write_item(RequestItems={"scores": r})
    prof.disable()
    st = pstats.Stats(prof).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)

    def cum(suffix: str, func: str) -> float:
        return max((v[3] for (f, _, fn), v in st.items() if f.endswith(suffix) and fn == func), default=0.0)

    total = cum("botocore/client.py", "_make_api_call")
    convert = cum("botocore/client.py", "_convert_to_request_dict")
    create = cum("botocore/endpoint.py", "create_request")
    parts = {name: cum(suffix, func) for name, suffix, func in PROFILE_BUCKETS}
    parts["request dict: user agent, host prefix, other"] = max(
        0.0, convert - parts["parameter validation"] - parts["serialization (JSON)"]
    )
    parts["request object + request-created hooks"] = max(0.0, create - parts["signing (SigV4Auth)"])
    parts["other (event emits, retry checks, call overhead)"] = max(0.0, total - sum(parts.values()))
    client.close()
    return {
        "method": f"cProfile over {len(reqs)} requests; shares of the profiled time, scaled to the "
        f"unprofiled {per_request_ms:.2f} ms/request",
        "profiled_ms_per_request": round(total / len(reqs) * 1000, 3),
        "share": {k: round(v / total, 3) for k, v in parts.items()},
        "ms_per_request": {k: round(v / total * per_request_ms, 3) for k, v in parts.items()},
    }


def latency_wall(url: str, chunks: list[list[dict]], repeat: int) -> dict:
    """10,000 items at 10 ms service latency: wall and CPU by writer and thread count."""
    from consumers.core.retry import Backoff

    out = {}
    for name, threads in [
        ("botocore", 1),
        ("botocore", 4),
        ("botocore", 8),
        ("lean", 1),
        ("lean", 4),
        ("lean", 8),
        ("lean", 16),
    ]:
        ex = ThreadPoolExecutor(threads) if threads > 1 else None
        if name == "botocore":
            from consumers.aws.dynamodb import DynamoDBSink

            sink: Any = DynamoDBSink(_client(url), "scores", backoff=Backoff(), executor=ex)
        else:
            sink = _lean(url, "lean", ex)
        from consumers.core.retry import Deadline

        def run(ex: ThreadPoolExecutor | None = ex, sink: Any = sink) -> None:
            if ex is None:
                for c in chunks:
                    sink._write_chunk(c, Deadline(60))
            else:
                list(ex.map(lambda c: sink._write_chunk(c, Deadline(60)), chunks))

        cpus, walls = measure(run, repeat)
        out[f"{name}_threads{threads}"] = {
            "requests": len(chunks),
            "wall_s": round(statistics.median(walls), 3),
            "cpu_s": round(statistics.median(cpus), 3),
        }
        log(
            f"  10 ms latency {name} x{threads}: wall {statistics.median(walls):.3f} s, "
            f"cpu {statistics.median(cpus):.3f} s"
        )
        if ex:
            ex.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400, help="BatchWriteItem(25) requests per measurement")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--latency-repeat", type=int, default=2)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "write_path.json"))
    args = ap.parse_args(argv)
    pin()

    from consumers.aws.dynamodb import build_items, chunk_items

    chunks = list(chunk_items(build_items(sample_rows(args.requests * 25), 30)))
    result: dict[str, Any] = {
        "benchmark": "write_path",
        "requests": len(chunks),
        "items_per_request": 25,
        "repeat": args.repeat,
        "machine": machine(),
        "variants": {},
    }
    with endpoint("instant") as server:
        url = server.endpoint
        for name in VARIANTS:
            run, cleanup = variant_runner(name, url, chunks)
            cpus, walls = measure(run, args.repeat)
            cleanup()
            ms = statistics.median(cpus) / len(chunks) * 1000
            result["variants"][name] = {
                "cpu_ms_per_request": round(ms, 3),
                "cpu_ms_per_request_min": round(min(cpus) / len(chunks) * 1000, 3),
                "wall_ms_per_request": round(statistics.median(walls) / len(chunks) * 1000, 3),
            }
            log(f"{name:28s} {ms:6.3f} ms CPU/request (min {min(cpus) / len(chunks) * 1000:.3f})")
        result["variants"]["aiodynamo"] = {
            "cpu_ms_per_request": None,
            "note": "not installed in this environment; not measured",
        }
        result["botocore_profile"] = profile_botocore(
            url, chunks, result["variants"]["botocore_default"]["cpu_ms_per_request"]
        )
        stats = server.stats()
        result["endpoint_requests"] = stats["requests"]
    base = result["variants"]["botocore_default"]["cpu_ms_per_request"]
    for v in result["variants"].values():
        if v.get("cpu_ms_per_request"):
            v["speedup_vs_botocore_default"] = round(base / v["cpu_ms_per_request"], 2)
    if not args.skip_latency:
        with endpoint("latency10") as server:
            result["latency10_10k_items"] = latency_wall(server.endpoint, chunks, args.latency_repeat)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
