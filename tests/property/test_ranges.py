"""Cutting objects into ranges (consumers/core/ranges.py) and the parts of their assembly
(consumers/aws/assembly.py plan_parts), as properties: whatever the content, the range size and the blocks
the scan is fed, the ranges tile the object, every cut is a record boundary, and each range read alone gives
the records (and line numbers) of the whole file; the parts of an assembly respect S3's limits."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.aws.assembly import plan_parts
from consumers.core.ranges import (
    MAX_RANGES,
    BoundaryScanner,
    JobView,
    RangeTask,
    ScanState,
    TaskError,
    range_bytes_for,
    status_document,
)

cells = st.text(alphabet=st.sampled_from(list('ab,"\n 1é')), max_size=12)


def csv_bytes(rows: list[list[str]], terminator: str = "\n") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=terminator).writerows(rows)
    return buf.getvalue().encode()


def scan(data: bytes, *, csv_: bool, range_bytes: int, block: int, resume_at: int | None = None) -> tuple:
    scanner = BoundaryScanner(csv=csv_, range_bytes=range_bytes)
    ranges = []
    for i in range(0, len(data), block):
        if resume_at is not None and i >= resume_at:  # another invocation resumes from the saved state
            scanner = BoundaryScanner(
                csv=csv_, range_bytes=range_bytes, state=ScanState.from_dict(scanner.state.to_dict())
            )
            resume_at = None
        ranges += scanner.feed(data[i : i + block])
    ranges += scanner.finish()
    return ranges, scanner.state


def records_with_lines(data: bytes, first_line: int = 1) -> list[tuple[int, list[str]]]:
    """(first physical line, cells) of each record, as the csv module reads them from lines split at
    ``\\n`` (as consumers/core/fileformats.py numbered_lines splits them)."""
    lines = [line.decode() for line in io.BytesIO(data).readlines()]
    out, pulled = [], []

    def feed():
        for i, line in enumerate(lines):
            pulled.append(first_line + i)
            yield line

    reader = csv.reader(feed())
    for row in reader:
        out.append((pulled[0], row))
        pulled.clear()
    return out


@settings(max_examples=300, deadline=None)
@given(
    header=st.lists(cells, min_size=1, max_size=4),
    rows=st.lists(st.lists(cells, min_size=1, max_size=4), max_size=40),
    range_bytes=st.integers(1, 200),
    block=st.integers(1, 300),
    resume=st.integers(0, 400),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_csv_cuts_are_record_boundaries_and_each_range_reads_as_the_whole(
    header, rows, range_bytes, block, resume, terminator
):
    data = csv_bytes([header, *rows], terminator)
    ranges, state = scan(data, csv_=True, range_bytes=range_bytes, block=block, resume_at=resume)
    # the ranges tile [header end, size)
    assert ranges[0].start == state.header_end and ranges[-1].end == len(data)
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    assert [r.index for r in ranges] == list(range(len(ranges)))
    whole = records_with_lines(data)
    # each range read alone after the header: the same records with the same line numbers
    pieces = [records_with_lines(data[: state.header_end])[:1]]
    for r in ranges:
        pieces.append(records_with_lines(data[r.start : r.end], r.first_line))
        assert r.first_line == data[: r.start].count(b"\n") + 1
    assert [rec for piece in pieces for rec in piece] == whole


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    trailing=st.booleans(),
    range_bytes=st.integers(1, 100),
    block=st.integers(1, 200),
)
def test_json_lines_cuts_fall_after_newlines_and_count_lines(lines, trailing, range_bytes, block):
    data = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    ranges, state = scan(data, csv_=False, range_bytes=range_bytes, block=block)
    assert state.header_end == 0 and ranges[0].start == 0 and ranges[-1].end == len(data)
    for r in ranges:
        assert r.start == 0 or data[r.start - 1 : r.start] == b"\n"
        assert r.first_line == data[: r.start].count(b"\n") + 1
        assert r.end - r.start >= min(range_bytes, len(data) - r.start) or r.end == len(data)
    assert b"".join(data[r.start : r.end] for r in ranges) == data


def test_a_quoted_newline_is_never_a_cut():
    data = b'h1,h2\n"a\nb",1\n"c\n\nd",2\ne,3\n'
    ranges, state = scan(data, csv_=True, range_bytes=1, block=3)
    assert state.header_end == 6
    assert [data[r.start : r.end] for r in ranges] == [b'"a\nb",1\n', b'"c\n\nd",2\n', b"e,3\n"]
    assert [r.first_line for r in ranges] == [2, 4, 7]


def test_a_header_with_a_quoted_newline():
    data = b'"id\nx",b\n1,2\n'
    ranges, state = scan(data, csv_=True, range_bytes=1, block=100)
    assert state.header_end == 9 and [(r.start, r.first_line) for r in ranges] == [(9, 3)]


def test_range_size_grows_to_keep_within_max_ranges():
    assert range_bytes_for(10 * 2**30, 64 * 2**20) == 64 * 2**20
    big = 100 * 2**40  # 100 TiB
    assert range_bytes_for(big, 64 * 2**20) * MAX_RANGES >= big
    assert range_bytes_for(1000, 1) == 5 * 2**20  # never below S3's part minimum by default


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=30), st.integers(1, 12))
def test_parts_are_at_least_the_minimum_but_the_last_and_cover_the_sources_in_order(sizes, min_part):
    sources = [(f"k{i}", n) for i, n in enumerate(sizes)]
    parts = plan_parts(sources, min_part)
    lengths = [sum(hi - lo for _, lo, hi in p.pieces) for p in parts]
    assert all(n >= min_part for n in lengths[:-1])
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert all(len(p.pieces) == 1 for p in parts if p.copy)
    flat = [(k, b) for p in parts for k, lo, hi in p.pieces for b in range(lo, hi)]
    assert flat == [(k, b) for k, n in sources for b in range(n)]
    assert len(parts) <= 2 * sum(1 for _, n in sources if n)  # why MAX_RANGES is half of S3's 10,000


def task(**kw) -> RangeTask:
    base = {"job": "j", "bucket": "b", "key": "in/x.csv", "etag": '"e"', "size": 100, "format": "csv",
            "index": 0, "start": 10, "end": 50, "first_line": 2, "header_end": 10, "arrival": 1.5,
            "output_key": "out/x.csv", "rejected_key": "out/x.csv.rejected",
            "work_prefix": "work/"}  # fmt: skip
    return RangeTask(**{**base, **kw})


def test_range_tasks_round_trip_and_refuse_what_they_are_not():
    t = task()
    assert RangeTask.from_json(t.to_json()) == t and not t.last and task(end=100).last
    assert t.part_key() == "work/j/r00000" and t.part_key(True) == "work/j/r00000.rejected"
    for body in (
        "{nope",
        "[1]",
        '{"kind": "range", "v": 2}',
        task(start=60).to_json(),
        task(format="x").to_json(),
    ):
        with pytest.raises(TaskError):
            RangeTask.from_json(body)
    with pytest.raises(TaskError, match="header_end"):
        task(header_b64="YWI=").header()  # 2 bytes, not 10
    assert task(header_end=0).header() == b"" and task().header() is None


def test_the_status_document_is_a_function_of_the_job():
    job = JobView("j", "b", "in/x", "out/x", "out/x.rejected", 10, started_at=0.0, total=3, done={0, 1})
    job.errors = {2: {"reason": "RuntimeError", "attempt": 1}}
    assert status_document(job) == status_document(job)
    doc = __import__("orjson").loads(status_document(job))
    assert (doc["state"], doc["ranges_done"], doc["ranges_total"]) == ("scoring", 2, 3)
    assert doc["errors"] == [{"range": 2, "reason": "RuntimeError", "attempt": 1}]
    job.failed = {2}
    assert job.state == "failed"
    job.done.add(2)
    assert job.state == "assembling"
    job.assembled_at = 5.0
    assert job.state == "done" and __import__("orjson").loads(status_document(job))["elapsed_s"] == 5.0
