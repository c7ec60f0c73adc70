"""Answer parsers on the kind of outputs models really write, and the new suites' values by hand."""

from __future__ import annotations

import pytest

from labscale.metrics import MetricsInputError, compute_suite, parse_label, parse_tool_calls
from labscale.metrics.tool_calls import ToolCall, parse_reference
from labscale.tasks import get_task

FACT, MATCH, TOPIC = (get_task(n).labels for n in ("fact-check", "entity-match", "topic"))


@pytest.mark.parametrize(("text", "labels", "label", "status"), [
    ("SUPPORTS", FACT, "SUPPORTS", "valid"),
    ("  refutes.\n", FACT, "REFUTES", "valid"),
    ("Not enough info", FACT, "NOT_ENOUGH_INFO", "resolvable"),
    ("The evidence clearly refutes the claim.", FACT, "REFUTES", "resolvable"),
    ("**Answer:** NOT_ENOUGH_INFO", FACT, "NOT_ENOUGH_INFO", "resolvable"),
    ("The claim says warming stopped. Some might think the evidence supports it, but it shows the "
     "opposite.\nAnswer: REFUTES", FACT, "REFUTES", "resolvable"),
    ('Here is my verdict: {"label": "NOT_ENOUGH_INFO", "confidence": 0.7}', FACT, "NOT_ENOUGH_INFO", "resolvable"),
    ("It either SUPPORTS or REFUTES it, hard to say.", FACT, None, "unresolvable"),
    ("I cannot determine this from the text.", FACT, None, "unresolvable"),
    ("", FACT, None, "unresolvable"),
    ("y", MATCH, "y", "valid"),
    ("N.", MATCH, "n", "valid"),
    ("The names differ only by a suffix, so y", MATCH, "y", "resolvable"),
    ("y\n\nName 1: DOAN TIFFANY A\nName 2: DOAN ETHAN", MATCH, "y", "resolvable"),
    ("Yes, they are the same person.", MATCH, None, "unresolvable"),  # the seed wants one token, y or n
    ("This text is mostly about healthcare costs.", TOPIC, "HEALTHCARE", "resolvable"),
    ("Topic: Economy", TOPIC, "ECONOMY", "resolvable"),
    ("ECONOMY and CRIME", TOPIC, None, "unresolvable"),
])
def test_parse_label_on_real_outputs(text: str, labels: tuple[str, ...], label: str | None, status: str) -> None:
    parsed = parse_label(text, labels)
    assert (parsed.label, parsed.status) == (label, status)


PARIS = (ToolCall("get_weather", (("city", '"Paris"'), ("unit", '"celsius"'))),)


@pytest.mark.parametrize(("text", "calls", "status"), [
    ('[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]', PARIS, "valid"),
    ('  {"name": "get_weather", "parameters": {"unit": "celsius", "city": "Paris"}}\n', PARIS, "valid"),
    ('{"tool_calls": [{"type": "function", "function": {"name": "get_weather", '
     '"arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"celsius\\"}"}}]}', PARIS, "valid"),
    ('Sure! I will check the weather for you.\n```json\n{"name": "get_weather", "arguments": '
     '{"city": "Paris", "unit": "celsius"}}\n```\nLet me know if you need anything else.', PARIS, "resolvable"),
    ('The user asks about the weather; {"name": "set_timer"} is not needed here.\nAnswer: '
     '[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]', PARIS, "resolvable"),
    ('I will call get_weather(city="Paris", unit="celsius") now.', PARIS, "resolvable"),
    ("{'name': 'get_weather', 'arguments': {'city': 'Paris', 'unit': 'celsius'}}", PARIS, "resolvable"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
     PARIS, "resolvable"),
    ('[{"name": "get_weather", "arguments": {"city": "Par', None, "unresolvable"),
    ("I'm sorry, I can't check the weather (no internet).", None, "unresolvable"),
    ('{"city": "Paris"}', None, "unresolvable"),
    ('I can use {"name": "get_weather", "description": "Current weather of a city.", "parameters": '
     '{"city": {"type": "str"}}}', None, "unresolvable"),  # the schema echoed back is not a call
    ("get_weather('Paris')", None, "unresolvable"),  # positional: the argument's name is unknown
])
def test_parse_tool_calls_on_real_outputs(text: str, calls: tuple[ToolCall, ...] | None, status: str) -> None:
    parsed = parse_tool_calls(text)
    assert (parsed.calls, parsed.status) == (calls, status)


def test_argument_values_compare_as_canonical_json() -> None:
    (call,) = parse_tool_calls('{"name": "convert", "arguments": {"amount": 20.0, "to": "EUR"}}').calls
    assert call == parse_reference('[{"name": "convert", "arguments": {"to": "EUR", "amount": 20}}]')[0]
    assert call != parse_tool_calls('{"name": "convert", "arguments": {"amount": "20", "to": "EUR"}}').calls[0]


def test_tool_call_suite_by_hand() -> None:
    refs = [
        '[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]',
        '[{"name": "set_timer", "arguments": {"minutes": 5}}, {"name": "get_stock_price", "arguments": {"symbol": "AAPL"}}]',
        '[{"name": "convert_currency", "arguments": {"amount": 20, "from_currency": "USD", "to_currency": "EUR"}}]',
        '[{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}]',
    ]
    preds = [
        refs[0],                                                     # exact, valid: 2 of 2 pairs
        'Two calls: [{"name": "get_stock_price", "arguments": {"symbol": "MSFT"}}, '
        '{"name": "set_timer", "arguments": {"minutes": 5}}]',       # names right, 1 of 2 pairs
        "Calling get_weather(city='Lima')",                          # wrong function: 0 of 1 / 0 of 3
        "I don't know.",                                             # unresolvable: 0 of 0 / 0 of 2
    ]
    corpus, items = compute_suite("tool_call", preds, refs)
    assert corpus["exact_match"] == 0.25 and corpus["name_accuracy"] == 0.5
    assert corpus["arg_precision"] == pytest.approx(3 / 5) and corpus["arg_recall"] == pytest.approx(3 / 9)
    assert corpus["arg_f1"] == pytest.approx(3 / 7)
    assert (corpus["valid_rate"], corpus["resolvable_rate"], corpus["unresolvable_rate"]) == (0.25, 0.5, 0.25)
    assert [i["status"] for i in items] == ["valid", "resolvable", "resolvable", "unresolvable"]
    assert [i["exact_match"] for i in items] == [True, False, False, False]
    assert [i["name_match"] for i in items] == [True, True, False, False]
    assert [i["arg_f1"] for i in items] == [1.0, 0.5, 0.0, 0.0]


def test_calls_without_arguments_and_no_calls() -> None:
    corpus, items = compute_suite("tool_call", ['{"name": "list_files"}', "[]", "nothing"],
                                  ['[{"name": "list_files", "arguments": {}}]', "[]", "[]"])
    assert [(i["exact_match"], i["arg_f1"]) for i in items] == [(True, 1.0), (True, 1.0), (False, 0.0)]
    assert corpus["arg_f1"] == 1.0  # no argument anywhere: nothing was missed or made up


def test_tool_call_suite_rejects_bad_references_and_options() -> None:
    with pytest.raises(MetricsInputError, match="reference 1 is not a function call"):
        compute_suite("tool_call", ["[]", "[]"], ["[]", "get the weather"])
    with pytest.raises(MetricsInputError, match="unknown options"):
        compute_suite("tool_call", ["[]"], ["[]"], options={"strict": True})


def test_binary_classification_by_hand() -> None:
    gold = ["y", "y", "n", "n", "y"]
    preds = ["y", "n", "y", "n", "Yes"]  # "Yes" is unresolvable: a miss of a positive
    corpus, items = compute_suite("binary_classification", preds, gold, MATCH)
    # positive y: TP 1 (item 1), FP 1 (item 3), FN 2 (items 2, 5)
    assert corpus["precision"] == 0.5 and corpus["recall"] == pytest.approx(1 / 3)
    assert corpus["f1"] == pytest.approx(0.4) and corpus["accuracy"] == 0.4
    assert corpus["unresolvable_rate"] == 0.2 and items[4]["parsed_label"] is None
    with pytest.raises(MetricsInputError, match="needs the task's labels"):
        compute_suite("binary_classification", preds, gold)
