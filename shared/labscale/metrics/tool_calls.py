"""Tool calling: find the function call(s) in a model output and score them against the reference.

A call is a function name plus its arguments. Accepted shapes (alone, or a list of them for
parallel calls): {"name": f, "arguments": {...}} (xLAM / OpenAI), with "parameters" or "args" in
place of "arguments", arguments given as a JSON string, {"function": {...}} and {"type":
"function", "function": {...}} (OpenAI tool_calls items), {"tool_calls": [...]}; and Python call
syntax with keyword arguments, f(city="Paris", days=3) (what "AST match" parses). An object with
a "description" is a function schema echoed back from the prompt, not a call.

Parsing statuses (as for label tasks):
- "valid": the whole output, stripped, is JSON of call(s).
- "resolvable": call(s) found inside the output: after the LAST "Answer:" first (chain of thought),
  then in ``` code fences, then anywhere (the first JSON value, at any "{" or "[", that is a call;
  else a Python literal or a Python call expression).
- "unresolvable": nothing call-shaped; the prediction scores 0 on every metric.

Argument values compare by canonical JSON (key order ignored, 5 == 5.0, "5" != 5, strings exact).
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from labscale.metrics.errors import MetricsInputError
from labscale.metrics.labels import ANSWER_MARKER, STATUSES

_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)```", re.DOTALL)
_CALL_START = re.compile(r"[A-Za-z_][\w.]*\s*\(")
_ARG_KEYS = ("arguments", "parameters", "args")


@dataclass(frozen=True)
class ToolCall:
    """One call: the function name and its arguments as sorted (key, canonical JSON value) pairs."""

    name: str
    arguments: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ParsedCalls:
    """A parsed output: its calls (None when unresolvable) and how they were found."""

    calls: tuple[ToolCall, ...] | None
    status: str


def _canonical(value: Any) -> Any:
    """Whole floats as ints, recursively, so 5 and 5.0 compare equal."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _one_call(obj: Any) -> ToolCall | None:
    """One call-shaped mapping as a ToolCall (None when it is not one)."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        return _one_call(obj["function"])
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip() or "description" in obj:  # a schema echoed back
        return None
    args = next((obj[k] for k in _ARG_KEYS if k in obj), {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    pairs = tuple(sorted((str(k), json.dumps(_canonical(v), sort_keys=True, ensure_ascii=False))
                         for k, v in args.items()))
    return ToolCall(name.strip(), pairs)


def to_calls(obj: Any) -> tuple[ToolCall, ...] | None:
    """The call(s) a decoded JSON/Python value holds, or None when it is not call-shaped."""
    if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
        obj = obj["tool_calls"]
    if isinstance(obj, list):
        calls = [_one_call(item) for item in obj]
        return None if any(c is None for c in calls) else tuple(c for c in calls if c is not None)
    call = _one_call(obj)
    return None if call is None else (call,)


def _json_scan(text: str) -> tuple[ToolCall, ...] | None:
    """The first JSON value in `text`, starting at any "{" or "[", that holds call(s)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        calls = to_calls(value)
        if calls:
            return calls
    return None


def _python_literal(text: str) -> tuple[ToolCall, ...] | None:
    """The call(s) in `text` when all of it is a Python literal ({'name': ...}: single quotes)."""
    try:
        return to_calls(ast.literal_eval(text.strip()))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _ast_call(node: ast.AST) -> ToolCall | None:
    """f(k=literal, ...) as a call; positional arguments cannot be named without the schema."""
    if not isinstance(node, ast.Call) or node.args:
        return None
    try:
        name = ast.unparse(node.func)
        args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
    except (ValueError, SyntaxError, TypeError):
        return None
    if len(args) != len(node.keywords):  # **kwargs
        return None
    return _one_call({"name": name, "arguments": args})


def _closing(text: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at `start` (quote-aware), or None."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _python_calls(text: str) -> tuple[ToolCall, ...] | None:
    """The first Python call expression, f(k=v, ...), or list of them, [f(...), g(...)], in `text`."""
    for match in _CALL_START.finditer(text):
        start = match.start() - 1 if match.start() and text[match.start() - 1] == "[" else match.start()
        end = _closing(text, start if start < match.start() else match.end() - 1)
        if end is None:
            continue
        try:
            node = ast.parse(text[start:end], mode="eval").body
        except SyntaxError:
            continue
        nodes = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
        calls = [_ast_call(n) for n in nodes]
        if calls and all(calls):
            return tuple(c for c in calls if c is not None)
    return None


def _regions(text: str) -> list[str]:
    """Where to look, most specific first: the final answer, code fences, the whole output."""
    answers = list(ANSWER_MARKER.finditer(text))
    regions = [text[answers[-1].end():]] if answers else []
    regions += _FENCE.findall(text)
    regions.append(text)
    return regions


def parse_tool_calls(text: str) -> ParsedCalls:
    """The call(s) in a model output, with a status: valid / resolvable / unresolvable."""
    try:
        calls = to_calls(json.loads(text))
        if calls is not None:
            return ParsedCalls(calls, "valid")
    except json.JSONDecodeError:
        pass
    for region in _regions(text):
        for finder in (_json_scan, _python_literal, _python_calls):
            calls = finder(region)
            if calls:
                return ParsedCalls(calls, "resolvable")
    return ParsedCalls(None, "unresolvable")


def parse_reference(text: str, index: int = 0) -> tuple[ToolCall, ...]:
    """A reference call (JSON, or a Python literal of it); MetricsInputError when it is none."""
    try:
        calls = to_calls(json.loads(text))
    except json.JSONDecodeError:
        calls = _python_literal(text)
    if calls is None:
        raise MetricsInputError(f"reference {index} is not a function call (JSON like "
                                f'[{{"name": ..., "arguments": {{...}}}}]): {text[:80]!r}')
    return calls


def _pairs(calls: tuple[ToolCall, ...]) -> Counter[tuple[str, str, str]]:
    return Counter((c.name, key, value) for c in calls for key, value in c.arguments)


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def tool_call_metrics(predictions: list[str], references: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Corpus metrics and per-item records for tool calling.

    Per item: status, exact_match (same multiset of calls), name_match (same multiset of function
    names), arg_precision / arg_recall / arg_f1 over (function, argument, value) triples (an item
    whose reference and prediction have no arguments scores 1 when parsed). Corpus: exact_match and
    name_accuracy (means), arg_precision / arg_recall / arg_f1 micro-averaged over all triples
    (1 when neither side has any), and valid_rate / resolvable_rate / unresolvable_rate.
    """
    records: list[dict[str, Any]] = []
    totals = Counter()
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        gold = parse_reference(ref, i)
        parsed = parse_tool_calls(pred)
        calls = parsed.calls or ()
        pred_pairs, gold_pairs = _pairs(calls), _pairs(gold)
        hit = sum((pred_pairs & gold_pairs).values())
        n_pred, n_gold = sum(pred_pairs.values()), sum(gold_pairs.values())
        found = parsed.calls is not None
        both_empty = float(found and not n_pred and not n_gold)
        precision, recall = _ratio(hit, n_pred, both_empty), _ratio(hit, n_gold, both_empty)
        records.append({
            "status": parsed.status,
            "exact_match": found and Counter(calls) == Counter(gold),
            "name_match": found and Counter(c.name for c in calls) == Counter(c.name for c in gold),
            "arg_precision": precision, "arg_recall": recall, "arg_f1": _f1(precision, recall),
        })
        totals.update({"hit": hit, "pred": n_pred, "gold": n_gold})
    n = len(records)
    nothing = float(not totals["pred"] and not totals["gold"])
    precision = _ratio(totals["hit"], totals["pred"], nothing)
    recall = _ratio(totals["hit"], totals["gold"], nothing)
    corpus = {
        "exact_match": sum(r["exact_match"] for r in records) / n,
        "name_accuracy": sum(r["name_match"] for r in records) / n,
        "arg_precision": precision,
        "arg_recall": recall,
        "arg_f1": _f1(precision, recall),
        **{f"{s}_rate": sum(r["status"] == s for r in records) / n for s in STATUSES},
    }
    return corpus, records
