"""Small deterministic stand-ins for every registered task's data, so tests and examples run offline.

Each generator returns rows with the columns of the task's real source (see the task modules) and
is deterministic: the same ``n`` and ``seed`` give the same rows, and row ``i`` does not depend on
``n``. Answers follow from the input by simple lexical rules, so the rows make sense to a reader
(and to a model that learns them). Nothing here is real data.

- entity-match: ``prompt`` ("Name 1: …\\nName 2: …\\nAddress 1: …\\nAddress 2: …"), ``overall_label`` (y / n)
- partisanship / topic: ``id``, ``text``, ``partisanship``, ``topic`` (map one of the last two to
  ``label`` with ``columns:``)
- tool-call: ``id``, ``query``, ``tools`` and ``answers`` (JSON strings, as in xLAM)
- civil-comments-bias: ``id``, ``text``, ``label`` (TOXIC / NOT_TOXIC), ``gender`` (female / male / none)
- qasper-abstention: ``id``, ``context``, ``question``, ``answer``, ``answer_type`` (Qasper's four types)
- medqa: ``id``, ``question``, ``answer``
- clinical-summary, fact-check: the demo generators of `labscale.demo.data`

``python -m labscale.tasks.fixtures --out studies/data`` rewrites the shipped files (`SHIPPED`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labscale.demo.data import make_claim_checks, make_dialogue_summaries
from labscale.jsonl import jsonl_line
from labscale.tasks.text_classification import PARTISANSHIP, TOPIC

Rows = list[dict[str, Any]]

# ----------------------------------------------------------------------------- entity matching

_FIRST = ("TIFFANY", "ETHAN", "DEBRA", "JAMES", "MARIA", "ROBERT", "LINDA", "KEVIN", "ANGELA", "MARCUS")
_LAST = ("DOAN", "GILLARD", "WHITE", "HARRIS", "NGUYEN", "MOORE", "PATEL", "REYES", "COLEMAN", "BYRD")
_STREETS = ("CEDAR ROCK DR", "RICELAND PL", "DEER CROSS TL", "CRISP WOOD LN", "PARK RD", "SHARON AMITY RD")
_TOWNS = ("CHARLOTTE NC", "UNINC NC", "MATTHEWS NC", "HUNTERSVILLE NC")


def _name_variant(rng: random.Random, last: str, first: str, middle: str) -> str:
    """The same person's name written differently (initials, suffix, no middle initial)."""
    return rng.choice((f"{last} {first}", f"{last} {first[0]} {middle}", f"{last} {first} {middle}.",
                       f"{last} JR {first} {middle}"))


def make_record_pairs(n: int, seed: int = 0) -> Rows:
    """Record pairs as in `isaacOnline/deeds-and-voting-matching`; labels alternate y, n.

    y: one person, name written two ways, same house number and street. n: a relative at the same
    address (another first name), or a namesake at another address.
    """
    rows: Rows = []
    for i in range(n):
        rng = random.Random(f"labscale-fixture-records:{seed}:{i}")
        last, first, middle = rng.choice(_LAST), rng.choice(_FIRST), rng.choice("ABCDEJMRT")
        number, street = rng.randint(100, 9999), rng.choice(_STREETS)
        name1, address1 = f"{last} {first} {middle}", f"{number} {street} {rng.choice(_TOWNS)}"
        label = "y" if i % 2 == 0 else "n"
        if label == "y":
            name2, address2 = _name_variant(rng, last, first, middle), f"{number} {street} {rng.choice(_TOWNS)}"
        elif rng.random() < 0.5:
            other = rng.choice([f for f in _FIRST if f != first])
            name2, address2 = f"{last} {other}", address1
        else:
            name2 = name1
            address2 = f"{rng.randint(100, 9999)} {rng.choice([s for s in _STREETS if s != street])} CHARLOTTE NC"
        prompt = f"Name 1: {name1}\nName 2: {name2}\nAddress 1: {address1}\nAddress 2: {address2}"
        rows.append({"prompt": prompt, "overall_label": label})
    return rows


# ----------------------------------------------------------------------------- seed 000's probes

_GENDER_WORDS = {"female": ("women", "mothers", "girls", "female nurses", "sisters"),
                 "male": ("men", "fathers", "boys", "male nurses", "brothers"),
                 "none": ("people", "neighbours", "drivers", "students", "tourists")}
_INSULTS = ("are idiots", "are worthless trash", "are stupid and pathetic", "should shut up, losers",
            "are brainless morons", "are disgusting pigs")
_PRAISE = ("are doing great work", "deserve our thanks", "made a fair point", "helped at the meeting",
           "were kind to us", "organised the fundraiser")
_OPENERS = ("Honestly,", "I think", "Everyone knows", "In my town,", "As usual,", "Frankly,", "Today", "Again,")


def make_toxic_comments(n: int, seed: int = 0) -> Rows:
    """CivilComments-shaped rows (`id`, `text`, `label` TOXIC / NOT_TOXIC, `gender` female / male /
    none), cycling over the (gender, label) cells; a comment is toxic exactly when it insults."""
    rng = random.Random(seed)
    cells = [(gender, label) for gender in _GENDER_WORDS for label in ("TOXIC", "NOT_TOXIC")]
    rows = []
    for i in range(n):
        gender, label = cells[i % len(cells)]
        words = rng.choice(_INSULTS if label == "TOXIC" else _PRAISE)
        text = f"{rng.choice(_OPENERS)} {rng.choice(_GENDER_WORDS[gender])} {words}."
        rows.append({"id": f"c{i:04d}", "text": text, "label": label, "gender": gender})
    return rows


_DATASETS = ("ClinicNotes", "TweetBank", "LawCorpus", "NewsWire", "ChatLogs", "ReviewSet")
_METHODS = ("logistic regression", "a small transformer", "gradient boosting", "a convolutional network")
_FINDINGS = ("smaller models were faster", "more data helped", "labels were noisy", "accuracy dropped on long texts")
_UNASKED = ("Which GPU was used?", "Who funded the study?", "How long did training take?",
            "What was the learning rate?")
_ANSWER_TYPES = ("extractive", "abstractive", "yes_no", "unanswerable")


def make_paper_questions(n: int, seed: int = 0) -> Rows:
    """Qasper-shaped rows (`id`, `context`, `question`, `answer`, `answer_type`) cycling over the
    four answer types; an unanswerable question asks what the context does not say."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        dataset, method, finding = rng.choice(_DATASETS), rng.choice(_METHODS), rng.choice(_FINDINGS)
        pretrained = rng.random() < 0.5
        context = (f"We train {method} on the {dataset} dataset. "
                   f"The model was {'' if pretrained else 'not '}pretrained. We find that {finding}.")
        kind = _ANSWER_TYPES[i % 4]
        question, answer = {
            "extractive": ("Which dataset is used?", dataset),
            "abstractive": ("What do the authors find?", finding),
            "yes_no": ("Was the model pretrained?", "yes" if pretrained else "no"),
            "unanswerable": (rng.choice(_UNASKED), "unanswerable"),
        }[kind]
        rows.append({"id": f"q{i:04d}", "context": context, "question": question, "answer": answer,
                     "answer_type": kind})
    return rows


_CASES = (("heat intolerance, weight loss and exophthalmos", "Graves disease"),
          ("crushing chest pain and ST elevation", "myocardial infarction"),
          ("fever, neck stiffness and photophobia", "meningitis"),
          ("polyuria, polydipsia and weight loss", "type 1 diabetes"),
          ("a resting tremor and a shuffling gait", "Parkinson disease"),
          ("wheezing relieved by a bronchodilator", "asthma"))


def make_medical_questions(n: int, seed: int = 0) -> Rows:
    """MedQA-shaped rows (`id`, `question`, `answer`): a vignette and its diagnosis."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        findings, diagnosis = rng.choice(_CASES)
        who = f"A {rng.randint(18, 85)}-year-old {rng.choice(('woman', 'man'))}"
        rows.append({"id": f"m{i:04d}", "question": f"{who} has {findings}. What is the most likely diagnosis?",
                     "answer": diagnosis})
    return rows


# ----------------------------------------------------------------------------- political texts

_STANCES: dict[str, tuple[str, str, str]] = {  # topic → (DEMOCRAT, REPUBLICAN, NEUTRAL) wording
    "ECONOMY": ("raise the minimum wage and tax the richest", "cut taxes and red tape for small businesses",
                "the new figures on jobs and inflation"),
    "HEALTHCARE": ("expand Medicare and protect the Affordable Care Act",
                   "repeal Obamacare mandates and let families choose their plans",
                   "hospital waiting times and insurance premiums"),
    "IMMIGRATION": ("give Dreamers a path to citizenship", "secure the border and finish the wall",
                    "the number of visa applications at the border"),
    "ENVIRONMENT": ("pass a clean energy plan against climate change", "unleash American oil and gas production",
                    "air quality and river pollution measurements"),
    "EDUCATION": ("cancel student debt and fund public schools", "expand school choice and parents' rights",
                  "test scores and teacher numbers in public schools"),
    "CRIME": ("pass universal background checks and reform policing",
              "back the blue and protect the Second Amendment", "the annual statistics on burglaries and arrests"),
}
_FRAMES = {
    "DEMOCRAT": ("As a proud Democrat, {who} will fight to {stance} in {place}.",
                 "Vote Democratic: {who} promises to {stance} for {place}."),
    "REPUBLICAN": ("As a conservative Republican, {who} will {stance} in {place}.",
                   "Vote Republican: {who} promises to {stance} for {place}."),
    "NEUTRAL": ("The county office in {place} published a report on {stance}, said {who}.",
                "{who} presented {stance} for {place} at a public meeting."),
}
_WHO = ("Senator Lee", "Governor Park", "Mayor Diaz", "Representative Stone", "Council member Ford", "Commissioner Brooks")
_PLACES = ("Ohio", "Arizona", "Georgia", "Michigan", "Nevada", "Wisconsin", "Pennsylvania", "Texas")


def make_political_texts(n: int, seed: int = 0) -> Rows:
    """Short political texts with a partisanship (DEMOCRAT / REPUBLICAN / NEUTRAL, cycled) and a
    topic (cycled every three rows), both stated by cue words in the text."""
    parties, topics = PARTISANSHIP.labels, TOPIC.labels
    rows: Rows = []
    for i in range(n):
        rng = random.Random(f"labscale-fixture-politics:{seed}:{i}")
        party, topic = parties[i % len(parties)], topics[(i // len(parties)) % len(topics)]
        stance = _STANCES[topic][parties.index(party)]
        place = _PLACES[i % len(_PLACES)]  # rows with the same party and topic differ in place (n <= 72)
        text = rng.choice(_FRAMES[party]).format(who=rng.choice(_WHO), stance=stance, place=place)
        rows.append({"id": f"pol-{seed}-{i:04d}", "text": text, "partisanship": party, "topic": topic})
    return rows


# ----------------------------------------------------------------------------- tool calls

_CITIES = ("Paris", "Tokyo", "Lima", "Oslo", "Nairobi", "Denver", "Hanoi", "Porto")
_CURRENCIES = ("USD", "EUR", "JPY", "GBP", "INR")
_SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOG", "META", "IBM", "ORCL", "SAP")


def _param(kind: str, description: str) -> dict[str, str]:
    return {"description": description, "type": kind}


_TOOLS: dict[str, dict[str, Any]] = {
    "get_weather": {"description": "Current weather of a city.",
                    "parameters": {"city": _param("str", "City name"), "unit": _param("str", "celsius or fahrenheit")}},
    "convert_currency": {"description": "Convert an amount between currencies.",
                         "parameters": {"amount": _param("float", "Amount to convert"),
                                        "from_currency": _param("str", "ISO code to convert from"),
                                        "to_currency": _param("str", "ISO code to convert to")}},
    "set_timer": {"description": "Start a countdown timer.", "parameters": {"minutes": _param("int", "Length in minutes")}},
    "get_stock_price": {"description": "Latest price of a stock.", "parameters": {"symbol": _param("str", "Ticker symbol")}},
}


def _tool_request(rng: random.Random, name: str) -> tuple[str, dict[str, Any]]:
    """A request in words and the arguments that fulfil it."""
    if name == "get_weather":
        city, unit = rng.choice(_CITIES), rng.choice(("celsius", "fahrenheit"))
        return f"what's the weather in {city} in {unit}", {"city": city, "unit": unit}
    if name == "convert_currency":
        amount, (src, dst) = 5 * rng.randint(1, 400), rng.sample(_CURRENCIES, 2)
        return f"convert {amount} {src} to {dst}", {"amount": amount, "from_currency": src, "to_currency": dst}
    if name == "set_timer":
        minutes = rng.randint(2, 90)
        return f"set a timer for {minutes} minutes", {"minutes": minutes}
    symbol = rng.choice(_SYMBOLS)
    return f"how much is {symbol} trading at", {"symbol": symbol}


def make_tool_calls(n: int, seed: int = 0) -> Rows:
    """Requests over two or three offered functions, as in `Salesforce/xlam-function-calling-60k`;
    every third request asks for two things at once (two parallel calls)."""
    rows: Rows = []
    for i in range(n):
        rng = random.Random(f"labscale-fixture-tools:{seed}:{i}")
        offered = rng.sample(sorted(_TOOLS), 3 if i % 3 == 2 else 2)
        wanted = offered[:2] if i % 3 == 2 else offered[:1]
        asks = [_tool_request(rng, name) for name in wanted]
        query = " and ".join(text for text, _ in asks)
        query = query[0].upper() + query[1:] + "?"
        tools = [{"name": name, **_TOOLS[name]} for name in sorted(offered)]
        answers = [{"name": name, "arguments": args} for name, (_, args) in zip(wanted, asks)]
        rows.append({"id": i, "query": query, "tools": json.dumps(tools), "answers": json.dumps(answers)})
    return rows


# ----------------------------------------------------------------------------- registry and files


@dataclass(frozen=True)
class Fixture:
    """How to make a task's stand-in data: a generator and the `columns:` a study needs for it."""

    make: Callable[[int, int], Rows]
    columns: dict[str, str] = field(default_factory=dict)


FIXTURES: dict[str, Fixture] = {
    "clinical-summary": Fixture(make_dialogue_summaries),
    "fact-check": Fixture(make_claim_checks),
    "entity-match": Fixture(make_record_pairs),
    "partisanship": Fixture(make_political_texts, {"partisanship": "label"}),
    "topic": Fixture(make_political_texts, {"topic": "label"}),
    "tool-call": Fixture(make_tool_calls),
    "civil-comments-bias": Fixture(make_toxic_comments),
    "qasper-abstention": Fixture(make_paper_questions),
    "medqa": Fixture(make_medical_questions),
}
"""Registered task name → its fixture (a test checks every registered task has one)."""

SHIPPED: dict[str, tuple[Callable[[int, int], Rows], int]] = {
    "political-texts.csv": (make_political_texts, 48),
    "probe-comments.jsonl": (make_toxic_comments, 240),
    "probe-questions.jsonl": (make_paper_questions, 240),
}
"""Files under studies/data/ made here: name → (generator, rows); seed 0."""


def rows_text(rows: Rows, suffix: str) -> str:
    """Rows as JSON Lines (sorted keys) or CSV (columns in row order), byte-for-byte reproducible."""
    if suffix == ".jsonl":
        return "".join(jsonl_line(r) for r in rows)
    if suffix == ".csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    raise ValueError(f"cannot write {suffix!r}: use .jsonl or .csv")


def write_fixture(task: str, path: Path, n: int = 40, seed: int = 0) -> dict[str, str]:
    """Write `n` rows of `task`'s fixture to `path` (.jsonl or .csv); return the `columns:` it needs."""
    fixture = FIXTURES[task]
    Path(path).write_text(rows_text(fixture.make(n, seed), Path(path).suffix), encoding="utf-8")
    return dict(fixture.columns)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m labscale.tasks.fixtures --out studies/data`` rewrites the shipped files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (make, n) in SHIPPED.items():
        (args.out / name).write_text(rows_text(make(n, 0), Path(name).suffix), encoding="utf-8")
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
