"""JSON Lines, one way everywhere: sorted keys, UTF-8, one object per line (byte-reproducible)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def jsonl_line(row: dict[str, Any]) -> str:
    """One row as a JSON Lines line (with its newline)."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows to `path` (via a temp file renamed into place: never half-written); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(jsonl_line(row))
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
