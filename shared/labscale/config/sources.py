"""Local data files and split expressions, read the way prep's `datasets.load_dataset` reads them, so
`labscale validate` rejects what prep would fail on (or silently get wrong) before anything runs.

A data file is UTF-8 (a byte-order mark is accepted, as pandas and pyarrow accept it): a CSV with a
header and at least one row, a JSONL file with one JSON object per non-blank line, or a .json file
holding a list of objects (or JSON lines). A split expression is Hugging Face's `split[from:to]`
(absolute or percent bounds, "closest" rounding), evaluated exactly as `datasets.ReadInstruction`
does (tests compare the two).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path


class InputProblem(ValueError):
    """What is wrong with a value or a data file, how to fix it, and the data file's line if known."""

    def __init__(self, problem: str, fix: str, line: int | None = None):
        super().__init__(problem)
        self.problem, self.fix, self.line = problem, fix, line


@dataclass(frozen=True)
class DataFile:
    """What a local data file holds: its column names (in order) and its number of rows."""

    columns: tuple[str, ...]
    rows: int


def _text(path: Path) -> str:
    """The file decoded as UTF-8 (BOM stripped); a non-UTF-8 byte names its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start]
        raise InputProblem(f"is not UTF-8 (byte 0x{byte:02x} on line {line}; Latin-1 or Windows-1252?)",
                           f"save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name})",
                           line) from None


def _empty() -> InputProblem:
    return InputProblem("is empty", "put the split's rows in it (or point files at the right file)")


def _csv(text: str) -> DataFile:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise _empty()
        rows = 0
        for row in reader:
            if not row:  # pandas skips blank lines
                continue
            if len(row) > len(header):
                raise InputProblem(f"line {reader.line_num} has {len(row)} fields but the header has {len(header)}",
                                   "quote fields that contain commas, or remove the extra fields", reader.line_num)
            rows += 1
    except csv.Error as exc:
        raise InputProblem(f"line {reader.line_num} is not valid CSV ({exc})", "fix that line", reader.line_num) from None
    if not rows:
        raise InputProblem("has a header but no rows", "add the split's rows under the header line", 2)
    return DataFile(tuple(header), rows)


def _json_lines(text: str) -> DataFile:
    columns: dict[str, None] = {}
    rows = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputProblem(f"line {number} is not valid JSON ({exc.msg} at column {exc.colno})",
                               "fix or remove that line (one JSON object per line)", number) from None
        if not isinstance(record, dict):
            raise InputProblem(f"line {number} is a JSON {type(record).__name__}, not an object",
                               'write one object per line, e.g. {"text": ..., "label": ...}', number)
        columns.update(dict.fromkeys(record))
        rows += 1
    if not rows:
        raise _empty()
    return DataFile(tuple(columns), rows)


def _json(text: str) -> DataFile:
    """A .json file: a list of objects, or JSON lines (both of which `datasets`' json builder reads)."""
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        return _json_lines(text)
    if isinstance(records, dict):
        return _json_lines(text)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputProblem("is not a list of JSON objects", 'write [{"text": ..., "label": ...}, ...] or one object per line')
    if not records:
        raise _empty()
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    return DataFile(tuple(columns), len(records))


def read_data_file(path: Path) -> DataFile:
    """Columns and row count of a local .csv/.jsonl/.json data file; `InputProblem` for what prep cannot load."""
    text = _text(path)
    if not text.strip():
        raise _empty()
    return _csv(text) if path.suffix == ".csv" else _json_lines(text) if path.suffix == ".jsonl" else _json(text)


# ── split expressions ──────────────────────────────────────────────────────────────────────────────

_SPLIT = re.compile(r"(?P<split>\w+(\.\w+)*)(\[((?P<from>-?[\d_]+)(?P<from_pct>%)?)?:((?P<to>-?[\d_]+)(?P<to_pct>%)?)?\])?")


@dataclass(frozen=True)
class SplitSlice:
    """One split expression: `split[from:to]`, bounds absolute or in percent (as `datasets` parses it)."""

    split: str
    start: int | None
    stop: int | None
    percent: bool

    @classmethod
    def parse(cls, expr: str) -> "SplitSlice":
        match = _SPLIT.fullmatch(expr)
        if match is None:
            raise InputProblem(f"{expr!r} is not a split expression", "write it like 'train', 'train[:80%]' or 'train[100:200]'")
        percent = bool(match["from_pct"] or match["to_pct"])
        start, stop = (int(match[k]) if match[k] else None for k in ("from", "to"))
        if percent and any(b is not None and abs(b) > 100 for b in (start, stop)):
            raise InputProblem(f"{expr!r}: percent bounds must lie between -100% and 100%", "use bounds like train[:80%]")
        return cls(match["split"], start, stop, percent)

    def bounds(self, rows: int) -> tuple[int, int]:
        """[from, to) row indices over a split of `rows` rows (`datasets`' closest rounding and clamping)."""
        def absolute(bound: int | None, default: int) -> int:
            value = default if bound is None else int(round(bound * rows / 100.0)) if self.percent else bound
            return min(max(rows + value, 0) if value < 0 else value, rows)
        return absolute(self.start, 0), absolute(self.stop, rows)

    def count(self, rows: int) -> int:
        start, stop = self.bounds(rows)
        return max(stop - start, 0)

    def selects_nothing_ever(self) -> bool:
        """Empty whatever the split's size (e.g. train[80%:70%], train[100:50]): checkable without the data."""
        return all(self.count(rows) == 0 for rows in (10**3, 10**6, 10**9))
