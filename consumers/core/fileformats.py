"""File formats of S3 batch scoring: JSON Lines and CSV read into chunks of typed events, and the scored and
rejected rows written back in the input's format (``consumers.core.filescoring`` drives them).

JSON Lines: one event object per line (``parse_json_event``, exactly as a Kinesis record), blank lines
skipped.
CSV: a header row of ``features.json`` names plus the id field; other columns are kept as strings (e.g.
``account_id`` for enrichment). Each cell is typed the way the same value would be in JSON, so the Vectorizer
is
the one validator: in a float or int column a cell of digits, sign, point and exponent that parses as a number
becomes one (an integer when it parses as one); in a bool column ``true``/``false`` (also ``True``/``False``/
``TRUE``/``FALSE``, as pandas writes them) become booleans; an empty cell is missing (NaN, or
``missing_field``
when required); anything else stays a string and is rejected as ``wrong_type`` (``nan``, ``inf``, ``1_000``,
`` 5``). Category, id and other columns are strings.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from consumers.core.decode import parse_json_event
from consumers.core.schema import FeatureSchema
from consumers.core.types import Reason

OUTPUT_COLUMNS = ("score", "model_version")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)


class FileReason(StrEnum):
    """Rejections that only a file can have (row reasons are ``consumers.core.types.Reason``)."""

    BAD_HEADER = "bad_header"  # CSV: no header, a repeated column, the id or a required column missing
    BAD_ROW = "bad_row"  # CSV: not as many cells as the header
    BAD_CSV = "bad_csv"  # CSV: the csv module refused the record (NUL byte, field too large)
    RANGE_MISALIGNED = "range_misaligned"  # a range of a split file ends inside a quoted field
    UNSUPPORTED_FORMAT = "unsupported_format"  # neither .csv nor JSON Lines by its suffix


def numbered_lines(stream: Any, max_line_bytes: int, first: int = 1) -> Iterator[tuple[int, bytes | None]]:
    """(line number from ``first``, the line with its newline) per line; ``None`` for a line longer than
    the cap, which is skipped in pieces, never held whole. ``first`` > 1: a range of a larger object
    (consumers/core/ranges.py)."""
    readline = stream.readline
    n = first - 1
    while True:
        line = readline(max_line_bytes + 1)
        if not line:
            return
        n += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while True:
                rest = readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield n, None
        else:
            yield n, line


# ============================================================================================ formats
@dataclass
class Chunk:
    """Up to CHUNK_ROWS parsed rows: parallel lists for the parsed ones, and the rows already rejected."""

    lines: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)  # CSV: the cells; JSON Lines: the line (bytes)
    rejected: list[tuple[int, str, str, Any]] = field(default_factory=list)  # (line, reason, detail, raw)

    def __len__(self) -> int:
        return len(self.events) + len(self.rejected)


class RangeMisaligned(Exception):
    """A range of a split CSV ends inside a quoted field: the file's quoting is not RFC 4180 (a bare quote
    in an unquoted field), so counting quotes cut a record in two (consumers/core/ranges.py). Permanent."""


# Appended after a range's last line when ``CsvFormat.range_end_check`` is set: parsed as a record of its own
# when the range ends on a record boundary, swallowed into the field when it ends inside a quoted one.
_RANGE_END = "\x1e\x1f\n"
_RANGE_END_ROW = ["\x1e\x1f"]


class HeaderError(Exception):
    """The file cannot be read at all; the message (names from the schema only) goes to .rejected."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# A number cell is made of digits, sign, point and exponent only, and parses as a Python int or float: no
# whitespace, no "_" separators, no nan/inf, no other scripts' digits (all of which float() would accept).
# Checked on a whole column at once ("\n"-joined): one C-level scan instead of one per cell (~5x cheaper
# than a full number grammar, measured).
_NOT_NUMBER = re.compile(r"[^0-9.eE+\-]")
_NOT_NUMBER_COLUMN = re.compile(r"[^0-9.eE+\-\n]")
_NOT_INT_COLUMN = re.compile(r"[^0-9+\-\n]")
_BOOLS: dict[str, Any] = {
    "true": True,
    "false": False,
    "True": True,
    "False": False,
    "TRUE": True,
    "FALSE": False,
    "": None,
}


def _number(cell: str) -> Any:
    """A cell as JSON would type it: int, float, None (empty) or the string itself (-> wrong_type)."""
    if not cell:
        return None
    if _NOT_NUMBER.search(cell) is None:
        try:
            return int(cell)
        except ValueError:
            try:
                return float(cell)
            except ValueError:
                pass
    return cell


def _floats(col: Sequence[str]) -> list[Any]:
    if _NOT_NUMBER_COLUMN.search("\n".join(col)) is None:
        try:  # float features accept ints too: 583 and 583.0 vectorize the same
            return [float(c) if c else None for c in col]
        except ValueError:  # "1e", "-", or a quoted cell with a newline between digits
            pass
    return [_number(c) for c in col]


def _ints(col: Sequence[str]) -> list[Any]:
    if _NOT_INT_COLUMN.search("\n".join(col)) is None:
        try:
            return [int(c) if c else None for c in col]
        except ValueError:
            pass
    return [_number(c) for c in col]


def _bools(col: Sequence[str]) -> list[Any]:
    get = _BOOLS.get
    return [get(c, c) for c in col]


def _strings(col: Sequence[str]) -> list[Any]:
    return [c or None for c in col]


_CONVERTERS: dict[str, Callable[[Sequence[str]], list[Any]]] = {
    "float": _floats,
    "int": _ints,
    "bool": _bools,
    "category": _strings,
}


class CsvFormat:
    name = "csv"
    content_type = "text/csv"

    def __init__(self, schema: FeatureSchema, *, enrichable: Sequence[str] = (), max_line_bytes: int) -> None:
        self.schema = schema
        self.enrichable = set(enrichable)
        self.max_line_bytes = max_line_bytes
        self.header: list[str] = []
        self._keep: list[int] | None = None  # output column indices when the input has score/model_version
        # A range of a split file that does not end the file: check that it ends on a record boundary.
        self.range_end_check = False

    # -- reading -------------------------------------------------------------------------------
    def _set_header(self, cells: list[str]) -> None:
        names = [c.strip() for c in cells]
        if names and names[0].startswith("\ufeff"):  # a byte-order mark (Excel's "CSV UTF-8")
            names[0] = names[0][1:]
        if not any(names):
            raise HeaderError(FileReason.BAD_HEADER, "the first line is not a header")
        if len(set(names)) != len(names):
            raise HeaderError(FileReason.BAD_HEADER, "a column name repeats")
        schema = self.schema
        if schema.id_field not in names:
            raise HeaderError(FileReason.BAD_HEADER, f"the id column {schema.id_field!r} is missing")
        lacking = [
            f.name
            for f in schema.features
            if f.required and f.name not in names and f.name not in self.enrichable
        ]
        if lacking:
            raise HeaderError(FileReason.BAD_HEADER, f"required columns missing: {', '.join(lacking)}")
        types = {f.name: f.type for f in schema.features}
        self.header = names
        self._convert = [_CONVERTERS.get(types.get(n, ""), _strings) for n in names]
        keep = [i for i, n in enumerate(names) if n not in OUTPUT_COLUMNS]
        self._keep = keep if len(keep) != len(names) else None

    def chunks(self, lines: Iterator[tuple[int, bytes | None]], chunk_rows: int) -> Iterator[Chunk]:
        bad: dict[int, tuple[str, str]] = {}  # physical line -> why (not UTF-8, too long)
        limit = self.max_line_bytes
        # The line numbers the csv reader pulled for the record it returns: a record's lines are the ones
        # it pulled since the previous record (it never reads ahead), numbered as ``lines`` numbers them
        # (a range's lines follow the header's with a gap: consumers/core/ranges.py).
        pulled: list[int] = []
        ended = [False]

        def text() -> Iterator[str]:
            for n, raw in lines:
                pulled.append(n)
                if raw is None:
                    bad[n] = (Reason.OVERSIZED, f"line longer than {limit} bytes")
                    yield "\n"
                    continue
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad[n] = (Reason.NOT_UTF8, "line is not valid UTF-8")
                    yield raw.decode("utf-8", "surrogateescape")
            if self.range_end_check:
                ended[0] = True
                yield _RANGE_END

        reader = csv.reader(text())
        try:
            first = next(reader)
        except StopIteration:
            return  # an empty object: empty output
        except csv.Error as exc:
            raise HeaderError(FileReason.BAD_HEADER, f"the header is not CSV: {exc}") from None
        if bad:
            raise HeaderError(FileReason.BAD_HEADER, "the header line is not valid UTF-8 or too long")
        self._set_header(first)
        pulled.clear()
        width = len(self.header)
        chunk = Chunk()
        cells: list[list[str]] = []
        while True:
            try:
                row: list[str] | None = next(reader)
                error = None
            except StopIteration:
                break
            except csv.Error as exc:
                row, error = [], str(exc)[:200]
            if ended[0]:
                if row == _RANGE_END_ROW and error is None:
                    break
                raise RangeMisaligned(
                    f"the range ends inside a quoted field (the record from line {pulled[0]} on)"
                )
            start = pulled[0]
            if bad:
                spanned = [n for n in pulled if n in bad]
                if spanned:
                    reason, detail = bad[spanned[0]]
                    for n in spanned:
                        del bad[n]
                    chunk.rejected.append((start, reason, detail, row))
                    row = None
            pulled.clear()
            if row is None:
                pass
            elif error is not None:
                chunk.rejected.append((start, FileReason.BAD_CSV, error, row))
            elif not row:
                continue  # a blank line
            elif len(row) != width:
                chunk.rejected.append(
                    (start, FileReason.BAD_ROW, f"{len(row)} cells, the header has {width}", row)
                )
            else:
                cells.append(row)
                chunk.lines.append(start)
            if len(cells) + len(chunk.rejected) >= chunk_rows:
                yield self._finish(chunk, cells)
                chunk, cells = Chunk(), []
        if cells or chunk.rejected:
            yield self._finish(chunk, cells)

    def _finish(self, chunk: Chunk, cells: list[list[str]]) -> Chunk:
        if cells:
            names = self.header
            columns = [conv(col) for conv, col in zip(self._convert, zip(*cells, strict=True), strict=True)]
            chunk.events = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
            chunk.raw = cells
        return chunk

    # -- writing -------------------------------------------------------------------------------
    def _rows_bytes(self, rows: Sequence[Sequence[Any]]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue().encode("utf-8", "surrogateescape")

    def output_header(self) -> bytes:
        if not self.header:
            return b""
        keep = self._keep
        cols = self.header if keep is None else [self.header[i] for i in keep]
        return self._rows_bytes([[*cols, *OUTPUT_COLUMNS]])

    def rejected_header(self) -> bytes:
        return self._rows_bytes([["line", "reason", "detail", *self.header]])

    def scored(self, raw: Sequence[list[str]], score_texts: list[str], version: str) -> bytes:
        keep = self._keep
        if keep is None:
            rows = [[*cells, s, version] for cells, s in zip(raw, score_texts, strict=True)]
        else:
            rows = [
                [*(cells[i] for i in keep), s, version] for cells, s in zip(raw, score_texts, strict=True)
            ]
        return self._rows_bytes(rows)

    def rejected(self, rejects: Sequence[tuple[int, str, str, Any]]) -> bytes:
        return self._rows_bytes(
            [[line, str(reason), detail, *(cells or ())] for line, reason, detail, cells in rejects]
        )


class JsonLinesFormat:
    name = "jsonl"
    content_type = "application/x-ndjson"

    def __init__(self, schema: FeatureSchema, *, max_line_bytes: int, **_: Any) -> None:
        self.max_line_bytes = max_line_bytes

    def chunks(self, lines: Iterator[tuple[int, bytes | None]], chunk_rows: int) -> Iterator[Chunk]:
        chunk = Chunk()
        limit = self.max_line_bytes
        for n, raw in lines:
            if raw is None:
                chunk.rejected.append((n, Reason.OVERSIZED, f"line longer than {limit} bytes", b""))
            else:
                data = raw.strip()
                if not data:
                    continue
                value, reason, detail = parse_json_event(data)
                if reason is None:
                    chunk.lines.append(n)
                    chunk.events.append(value)  # type: ignore[arg-type]
                    chunk.raw.append(data)
                else:
                    chunk.rejected.append((n, reason, detail, data))
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = Chunk()
        if len(chunk):
            yield chunk

    def output_header(self) -> bytes:
        return b""

    def rejected_header(self) -> bytes:
        return b""

    def scored(self, events: Sequence[dict[str, Any]], score_texts: list[str], version: str) -> bytes:
        tail = b',"model_version":' + orjson.dumps(version) + b"}\n"
        out = bytearray()
        for ev, s in zip(events, score_texts, strict=True):
            if "score" in ev or "model_version" in ev:
                ev = {k: v for k, v in ev.items() if k not in OUTPUT_COLUMNS}
            # the event's own JSON with the score spliced in as written text (9 decimals, like the table);
            # an event always has its id, so the object is never empty
            out += orjson.dumps(ev)[:-1]
            out += b',"score":' + s.encode("ascii") + tail
        return bytes(out)

    def rejected(self, rejects: Sequence[tuple[int, str, str, Any]]) -> bytes:
        out = bytearray()
        for line, reason, detail, data in rejects:
            entry: dict[str, Any] = {"line": line, "reason": str(reason), "detail": detail}
            try:
                entry["data"] = data.decode("utf-8")
            except UnicodeDecodeError:
                entry["data_base64"] = base64.b64encode(data).decode("ascii")
            out += orjson.dumps(entry) + b"\n"
        return bytes(out)


def format_for(key: str) -> type[CsvFormat] | type[JsonLinesFormat] | None:
    lower = key.lower()
    if lower.endswith(CSV_SUFFIXES):
        return CsvFormat
    if lower.endswith(JSONL_SUFFIXES):
        return JsonLinesFormat
    return None
