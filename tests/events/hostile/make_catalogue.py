"""The hostile-input catalogue: AWS-shaped Kinesis events whose every record the consumer must quarantine
with one specific reason code, never crash on and never report in ``batchItemFailures``.

    .venv/bin/python tests/events/hostile/make_catalogue.py         # (re)write the JSON files + manifest.json
    .venv/bin/python tests/events/hostile/make_catalogue.py --check # exit 1 if the files are out of date

``manifest.json`` maps each file to ``expected``: per Kinesis record, in order, the list of reason codes of
its user records (one for a plain record or an aggregate rejected whole; one per sub-record for an
aggregate that de-aggregates), and ``notes``: what each record is. Two cases are too large to commit and
are built in memory by the tests from the functions here: a 1 MiB string (``oversized_event``) and a batch
of 10,000 malformed records (``all_malformed_event``). Everything is deterministic: same bytes every run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from itertools import cycle, islice
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from consumers.core import kpl  # noqa: E402
from consumers.core.limits import KPL_DIGEST_BYTES, KPL_MAGIC  # noqa: E402
from sam.local.events import kinesis_event, kinesis_record, sequence_number  # noqa: E402

MANIFEST = HERE / "manifest.json"
ARRIVAL = 1_763_805_600.0
MAX_FIXTURE_BYTES = 100_000  # committed fixtures stay small
ONE_MIB = 1024 * 1024

# A valid event (tests/events/kinesis_valid.json, record 0): each hostile record breaks it in one way.
BASE: dict[str, Any] = json.loads(
    base64.b64decode(
        json.loads((HERE.parent / "kinesis_valid.json").read_text())["Records"][0]["kinesis"]["data"]
    )
)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    return dict(BASE, event_id=event_id, **fields)


def with_literal(event_id: str, name: str, literal: str) -> bytes:
    """The base event with field ``name`` written as the raw JSON text ``literal`` (NaN, 1e400, ...)."""
    text = dumps({k: v for k, v in event(event_id).items() if k != name})
    return text[:-1] + f',"{name}":{literal}}}'.encode()


def append_member(event_id: str, member: str) -> bytes:
    """The base event with the raw JSON member text ``member`` appended (a repeated key, odd spacing ...)."""
    return dumps(event(event_id))[:-1] + b"," + member.encode("utf-8") + b"}"


def aggregate(subs: list[bytes], pk: str = "acct-00042") -> bytes:
    return kpl.aggregate([(pk, s) for s in subs])


def redigest(body: bytes) -> bytes:
    """Magic + ``body`` + a matching MD5: a record that passes the checksum whatever ``body`` is."""
    return KPL_MAGIC + body + hashlib.md5(body).digest()


def body_of(agg: bytes) -> bytes:
    return agg[len(KPL_MAGIC) : -KPL_DIGEST_BYTES]


# --- the cases: file -> (description, [(data | {"data_b64": str}, [reasons], note)]) ------------------------
def cases() -> dict[str, tuple[str, list[tuple[Any, list[str], str]]]]:
    good_agg = aggregate([dumps(event("agg-0")), dumps(event("agg-1")), dumps(event("agg-2"))])
    flipped = bytearray(good_agg)
    flipped[40] ^= 0x04
    flipped2 = bytearray(good_agg)
    flipped2[len(KPL_MAGIC)] ^= 0x80
    bad_md5 = bytearray(good_agg)
    bad_md5[-1] ^= 0x01
    wire7 = redigest(b"\x1f" + body_of(good_agg))  # field 3, wire type 7: no such wire type
    no_records = redigest(kpl._enc_len(1, b"acct-00042"))  # a partition key table and nothing else
    pk_out_of_range = redigest(kpl._enc_len(1, b"pk") + kpl._enc_len(3, b"\x08\x05\x1a\x02{}"))
    deep_k = 1100
    return {
        "bad_base64.json": (
            "data that is not strict base64 (Lambda always sends valid base64: a bug or a forgery)",
            [
                ({"data_b64": "not base64!!"}, ["bad_base64"], "characters outside the alphabet"),
                ({"data_b64": "eyJhIjox"[:-1]}, ["bad_base64"], "length not a multiple of 4"),
                ({"data_b64": "eyJh IjoxfQ=="}, ["bad_base64"], "embedded space"),
                ({"data_b64": "eyJhIjoxfQ==\n"}, ["bad_base64"], "trailing newline"),
                ({"data_b64": "eyJhIjoxfQ-_"}, ["bad_base64"], "URL-safe alphabet"),
                ({"data_b64": "=eyJhIjoxfQ"}, ["bad_base64"], "leading padding"),
                ({"data_b64": "\u00fc\u00fc\u00fc\u00fc"}, ["bad_base64"], "non-ASCII"),
                ({"data_b64": None}, ["bad_base64"], "data is null"),
            ],
        ),
        "kpl_truncated.json": (
            "KPL aggregates cut short: rejected whole, never de-aggregated up to the cut",
            [
                (KPL_MAGIC, ["bad_aggregate"], "magic only"),
                (KPL_MAGIC + b"\x0a\x03", ["bad_aggregate"], "magic + 2 bytes: shorter than magic + digest"),
                (good_agg[:-5], ["bad_aggregate_checksum"], "tail cut: the digest no longer matches"),
                (good_agg[: len(good_agg) // 2], ["bad_aggregate_checksum"], "cut in half"),
                (
                    redigest(body_of(good_agg)[:-3]),
                    ["bad_aggregate"],
                    "body cut inside the last record, digest recomputed",
                ),
                (
                    redigest(body_of(good_agg)[:7]),
                    ["bad_aggregate"],
                    "body cut inside the first record, digest recomputed",
                ),
            ],
        ),
        "kpl_bitflip.json": (
            "KPL aggregates with flipped bits or a corrupt protobuf",
            [
                (bytes(flipped), ["bad_aggregate_checksum"], "one bit flipped in a sub-record"),
                (bytes(flipped2), ["bad_aggregate_checksum"], "one bit flipped in the first protobuf key"),
                (wire7, ["bad_aggregate"], "unsupported wire type 7, digest recomputed"),
                (no_records, ["bad_aggregate"], "a valid protobuf with no records"),
                (pk_out_of_range, ["bad_aggregate"], "partition key index 5 of a 1-entry table"),
            ],
        ),
        "kpl_bad_md5.json": (
            "KPL aggregates whose MD5 digest does not match the protobuf",
            [
                (bytes(bad_md5), ["bad_aggregate_checksum"], "last digest bit flipped"),
                (KPL_MAGIC + body_of(good_agg) + b"\x00" * 16, ["bad_aggregate_checksum"], "zero digest"),
                (
                    KPL_MAGIC + body_of(good_agg) + hashlib.sha256(body_of(good_agg)).digest()[:16],
                    ["bad_aggregate_checksum"],
                    "a digest of the wrong algorithm",
                ),
            ],
        ),
        "kpl_hostile_subrecords.json": (
            "valid KPL aggregates whose sub-records are hostile: each sub-record "
            "quarantined on its own, under the parent's sequence number",
            [
                (
                    aggregate(
                        [
                            append_member("sub-0", '"amount":2'),
                            b"",
                            b"[1,2]",
                            b'{"a":',
                            b"\xfe\xff",
                            dumps(event("sub-5", amount="12.5")),
                            dumps(event("sub-6", currency="XXX")),
                            with_literal("sub-7", "amount", "NaN"),
                        ]
                    ),
                    [
                        "duplicate_key",
                        "empty",
                        "not_object",
                        "bad_json",
                        "not_utf8",
                        "wrong_type",
                        "unknown_category",
                        "bad_json",
                    ],
                    "eight hostile sub-records",
                ),
                (aggregate([b"\x00" * 10, b"{}"]), ["bad_json", "missing_id"], "NUL bytes; an empty object"),
            ],
        ),
        "deep_nesting.json": (
            "nesting beyond orjson's limit of 1024 levels: bad_json, no recursion error",
            [
                (b"[" * deep_k + b"]" * deep_k, ["bad_json"], f"{deep_k} nested arrays"),
                (b'{"a":' * deep_k + b"1" + b"}" * deep_k, ["bad_json"], f"{deep_k} nested objects"),
                (
                    with_literal("deep-2", "note", "[" * deep_k + "]" * deep_k),
                    ["bad_json"],
                    "a valid event with a deep field",
                ),
                (b"[" * 30_000, ["bad_json"], "30,000 unclosed brackets"),
            ],
        ),
        "huge_numbers.json": (
            "number literals beyond float64, or beyond a feature's range",
            [
                (with_literal("num-0", "amount", "1e400"), ["bad_json"], "1e400: orjson refuses infinity"),
                (with_literal("num-1", "amount", "-1e400"), ["bad_json"], "-1e400"),
                (
                    with_literal("num-2", "amount", "9" * 400),
                    ["bad_json"],
                    "a 400-digit integer: beyond float64",
                ),
                (
                    with_literal("num-3", "amount", "1" + "0" * 30),
                    ["out_of_range"],
                    "10**30: a float above amount's max",
                ),
                (with_literal("num-4", "amount", "1e300"), ["out_of_range"], "1e300"),
                (
                    with_literal("num-5", "velocity_ratio", "3.5e38"),
                    ["out_of_range"],
                    "3.5e38: above float32 (and the max)",
                ),
                (
                    with_literal("num-6", "hour_of_day", "18446744073709551615"),
                    ["out_of_range"],
                    "2**64-1 (still an integer for orjson)",
                ),
                (
                    with_literal("num-7", "hour_of_day", "1" + "0" * 30),
                    ["wrong_type"],
                    "10**30 in an int feature: orjson makes integers beyond 64 bits floats, and a float is "
                    "not an int",
                ),
                (
                    with_literal("num-8", "hour_of_day", "-9223372036854775809"),
                    ["wrong_type"],
                    "below -2**63: a float",
                ),
            ],
        ),
        "nan_infinity.json": (
            "NaN and Infinity literals are not JSON",
            [
                (with_literal("nan-0", "amount", "NaN"), ["bad_json"], "NaN"),
                (with_literal("nan-1", "amount", "Infinity"), ["bad_json"], "Infinity"),
                (with_literal("nan-2", "amount", "-Infinity"), ["bad_json"], "-Infinity"),
                (with_literal("nan-3", "amount", "nan"), ["bad_json"], "nan"),
                (with_literal("nan-4", "ip_risk_score", "inf"), ["bad_json"], "inf"),
                (dumps(event("nan-5", amount="NaN")), ["wrong_type"], 'the string "NaN" is a string'),
            ],
        ),
        "duplicate_keys.json": (
            "a key given twice: parsers disagree on its value (orjson keeps the last)",
            [
                (append_member("dup-0", '"amount":999999'), ["duplicate_key"], "amount twice"),
                (append_member("dup-1", '"event_id":"other-id"'), ["duplicate_key"], "event_id twice"),
                (
                    with_literal("dup-2", "note", '{"a":1,"a":2}'),
                    ["duplicate_key"],
                    "a duplicate in a nested object",
                ),
                (
                    with_literal("dup-3", "list", '[{"x":1},{"y":1,"y":2}]'),
                    ["duplicate_key"],
                    "a duplicate in an object inside an array",
                ),
                (
                    append_member("dup-4", '"\\u0061mount":5'),
                    ["duplicate_key"],
                    "amount again, written \\u0061mount",
                ),
                (
                    append_member("dup-5", ' "currency"\t:\n"USD" '),
                    ["duplicate_key"],
                    "whitespace around the repeated key's colon",
                ),
                (
                    append_member("dup-6", '"channel":"pos"').replace(
                        b'"event_time":"', b'"event_time":"\\u003a'
                    ),
                    ["duplicate_key"],
                    "an escaped colon elsewhere in the record",
                ),
            ],
        ),
        "wrong_types.json": (
            "well-formed JSON objects with a field of the wrong JSON type, or a bad id",
            [
                (dumps(event("type-0", amount="12.5")), ["wrong_type"], "amount as a string"),
                (dumps(event("type-1", card_present=1)), ["wrong_type"], "a bool as 1"),
                (dumps(event("type-2", hour_of_day=3.5)), ["wrong_type"], "an int as 3.5"),
                (dumps(event("type-3", hour_of_day=True)), ["wrong_type"], "an int as true"),
                (dumps(event("type-4", currency=7)), ["wrong_type"], "a category as a number"),
                (dumps(event("type-5", amount=[1])), ["wrong_type"], "an array"),
                (dumps(event("type-6", amount={"v": 1})), ["wrong_type"], "an object"),
                (dumps(event("type-7", amount=None)), ["missing_field"], "a required feature null"),
                (dumps({k: v for k, v in BASE.items() if k != "event_id"}), ["missing_id"], "no event_id"),
                (dumps(event(12345)), ["bad_id"], "event_id a number"),
                (dumps(event("")), ["bad_id"], "event_id empty"),
                (dumps(event("i" * 513)), ["bad_id"], "event_id of 513 characters (max 512)"),
            ],
        ),
        "unknown_categories.json": (
            "category values outside the schema's list",
            [
                (dumps(event("cat-0", currency="XXX")), ["unknown_category"], "unknown currency"),
                (dumps(event("cat-1", currency="usd")), ["unknown_category"], "wrong case"),
                (dumps(event("cat-2", currency="")), ["unknown_category"], "empty string"),
                (
                    dumps(event("cat-3", merchant_category="EUR")),
                    ["unknown_category"],
                    "another feature's category",
                ),
                (
                    dumps(event("cat-4", channel="pos\u200b")),
                    ["unknown_category"],
                    "a zero-width space appended",
                ),
            ],
        ),
        "not_utf8.json": (
            "bytes that are not UTF-8 (or JSON that is not UTF-8 encoded)",
            [
                (dumps(event("utf-0")).replace(b"utf-0", b"utf-\xff"), ["not_utf8"], "0xff inside a string"),
                (
                    dumps(event("utf-1")).replace(b"utf-1", b"\xc0\xaf"),
                    ["not_utf8"],
                    "overlong encoding of '/'",
                ),
                (
                    dumps(event("utf-2")).replace(b"utf-2", b"\xed\xa0\x80"),
                    ["not_utf8"],
                    "a UTF-8-encoded surrogate",
                ),
                (dumps(event("utf-3"))[:-2] + b"\xe2\x82", ["not_utf8"], "a truncated multi-byte sequence"),
                (
                    json.dumps(event("utf-4 caf\u00e9"), ensure_ascii=False).encode("latin-1"),
                    ["not_utf8"],
                    "Latin-1",
                ),
                (
                    b"\xff\xfe" + json.dumps(event("utf-5")).encode("utf-16-le"),
                    ["not_utf8"],
                    "UTF-16 with its BOM",
                ),
                (b"\xef\xbb\xbf" + dumps(event("utf-6")), ["bad_json"], "a UTF-8 BOM: valid UTF-8, not JSON"),
            ],
        ),
        "empty.json": (
            "records with no data",
            [
                (b"", ["empty"], "zero bytes"),
                (aggregate([b""]), ["empty"], "an aggregate whose only sub-record is empty"),
            ],
        ),
        "not_object.json": (
            "valid JSON that is not an object",
            [
                (b"[]", ["not_object"], "an empty array"),
                (dumps([event("arr-1")]), ["not_object"], "an event inside an array"),
                (b'"a string"', ["not_object"], "a string"),
                (b"12345", ["not_object"], "a number"),
                (b"true", ["not_object"], "true"),
                (b"null", ["not_object"], "null"),
            ],
        ),
        "bad_json.json": (
            "malformed JSON text",
            [
                (dumps(event("bad-0"))[:-1], ["bad_json"], "closing brace missing"),
                (dumps(event("bad-1"))[:-1] + b",}", ["bad_json"], "trailing comma"),
                (b"{'event_id': 'bad-2'}", ["bad_json"], "single quotes"),
                (b'{"event_id": "bad-3"} // comment', ["bad_json"], "a comment"),
                (b"{}{}", ["bad_json"], "two objects"),
                (b'{"event_id": "bad\x01-5"}', ["bad_json"], "a raw control character in a string"),
                (b'{"event_id": "\\ud800"}', ["bad_json"], "a lone surrogate escape"),
                (b'{"event_id": "\\x41"}', ["bad_json"], "an invalid escape"),
                (b"   \n\t ", ["bad_json"], "whitespace only"),
                (b"\x00", ["bad_json"], "a NUL byte"),
            ],
        ),
    }


def build() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(file name -> event, manifest). Each file's sequence numbers start at a distinct offset."""
    files: dict[str, dict[str, Any]] = {}
    manifest: dict[str, Any] = {}
    for f, (name, (description, entries)) in enumerate(sorted(cases().items())):
        records = []
        for i, (data, _, _) in enumerate(entries):
            raw = b"" if isinstance(data, dict) else data
            rec = kinesis_record(
                raw,
                sequence_number=sequence_number(f * 1000 + i),
                partition_key=f"hostile-{f}-{i}",
                arrival=ARRIVAL + i,
            )
            if isinstance(data, dict):
                rec["kinesis"]["data"] = data["data_b64"]
            records.append(rec)
        files[name] = kinesis_event(records)
        manifest[name] = {
            "description": description,
            "expected": [r for _, r, _ in entries],
            "notes": [n for _, _, n in entries],
        }
    return files, manifest


def encode(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=True) + "\n"


# --- built in memory by the tests (too large to commit) -----------------------------------------------------
def oversized_event(string_bytes: int = ONE_MIB) -> dict[str, Any]:
    """One record: a valid event with a string field of ``string_bytes`` bytes (default 1 MiB)."""
    data = dumps(event("big-0", note="x" * string_bytes))
    return kinesis_event(
        [kinesis_record(data, sequence_number=sequence_number(900_000), partition_key="big", arrival=ARRIVAL)]
    )


# Small payloads (the 10,000 must fit Lambda's 6 MB invoke payload) with their reasons, cycled.
MALFORMED_10K: list[tuple[Any, str]] = [
    ({"data_b64": "!!"}, "bad_base64"),
    (b"", "empty"),
    (b"[]", "not_object"),
    (b"{", "bad_json"),
    (b"\xff", "not_utf8"),
    (b'{"a":1,"a":2}', "duplicate_key"),
    (b'{"a":NaN}', "bad_json"),
    (b'{"a":1e400}', "bad_json"),
    (b'{"a":1}', "missing_id"),
    (b'{"event_id":1}', "bad_id"),
    (KPL_MAGIC + b"\x00" * 17, "bad_aggregate_checksum"),
    (redigest(b"\x0a"), "bad_aggregate"),
]


def all_malformed_event(n: int = 10_000) -> tuple[dict[str, Any], list[str]]:
    """``n`` records, every one malformed (``MALFORMED_10K`` cycled), and the reason of each."""
    records, reasons = [], []
    for i, (data, reason) in enumerate(islice(cycle(MALFORMED_10K), n)):
        rec = kinesis_record(
            b"" if isinstance(data, dict) else data,
            sequence_number=sequence_number(i),
            partition_key=f"m{i % 16}",
            arrival=ARRIVAL,
        )
        if isinstance(data, dict):
            rec["kinesis"]["data"] = data["data_b64"]
        records.append(rec)
        reasons.append(reason)
    return kinesis_event(records), reasons


def main(argv: list[str]) -> int:
    files, manifest = build()
    wanted = {name: encode(ev) for name, ev in files.items()}
    wanted[MANIFEST.name] = encode(manifest)
    too_big = {n: len(t) for n, t in wanted.items() if len(t) > MAX_FIXTURE_BYTES}
    if too_big:
        print(f"fixtures over {MAX_FIXTURE_BYTES} bytes: {too_big}", file=sys.stderr)
        return 1
    stale = sorted(n for n, t in wanted.items() if not (HERE / n).exists() or (HERE / n).read_text() != t)
    extra = sorted(p.name for p in HERE.glob("*.json") if p.name not in wanted)
    if "--check" in argv:
        if stale or extra:
            print(
                f"out of date: {stale}; not generated: {extra} (run {Path(__file__).relative_to(REPO)})",
                file=sys.stderr,
            )
            return 1
        return 0
    for name in stale:
        (HERE / name).write_text(wanted[name])
    print(
        f"{len(files)} events, {sum(len(e['Records']) for e in files.values())} records; wrote "
        f"{stale or 'nothing'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
