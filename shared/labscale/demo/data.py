"""Small synthetic stand-ins for the seeds' tasks, for the offline demo and tests.

Two generators, both deterministic (same ``n`` and ``seed`` -> same rows, and row ``i`` does
not depend on ``n``, so a shorter set is a prefix of a longer one) and standard-library only:

* :func:`make_dialogue_summaries` -- templated doctor-patient dialogues and the clinical note
  section they support, with the columns of the MTS-Dialog CSVs behind ``beanham/medsum``
  (``ID``, ``section_header``, ``dialogue``, ``section_text``).
* :func:`make_claim_checks` -- claim + evidence pairs labelled SUPPORTS / REFUTES /
  NOT_ENOUGH_INFO, shaped like the Climate-FEVER pairs (``claim_id``, ``claim``, ``evidence``,
  ``label``).

The texts are short and the reference output is always derivable from the input by simple
lexical rules, so a tiny model fine-tuned for a couple of CPU minutes can visibly learn them.
Nothing here is real patient data or a real claim. Regenerate the committed files with
``python -m labscale.demo.data --out studies/data``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from labscale.jsonl import write_jsonl

__all__ = [
    "CLAIM_COLUMNS",
    "CLAIM_LABELS",
    "DEMO_FILES",
    "DEMO_ROWS",
    "DIALOGUE_COLUMNS",
    "SECTION_HEADERS",
    "main",
    "make_claim_checks",
    "make_dialogue_summaries",
    "tokenizer_corpus",
    "write_demo_data",
]

DIALOGUE_COLUMNS: tuple[str, ...] = ("ID", "section_header", "dialogue", "section_text")
CLAIM_COLUMNS: tuple[str, ...] = ("claim_id", "claim", "evidence", "label")
SECTION_HEADERS: tuple[str, ...] = ("CC", "GENHX", "MEDICATIONS", "ALLERGY", "FAM/SOCHX")
CLAIM_LABELS: tuple[str, ...] = ("SUPPORTS", "REFUTES", "NOT_ENOUGH_INFO")
DEMO_FILES: dict[str, str] = {"dialogues": "demo-dialogues.jsonl", "claims": "demo-claims.jsonl"}
DEMO_ROWS = 400

# --------------------------------------------------------------------------- dialogue slots

_LAST_NAMES = (
    "Smith", "Jones", "Brown", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Moore", "Taylor",
    "Clark", "Lewis", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green", "Baker",
)
_SYMPTOMS = (
    "a headache", "a cough", "a sore throat", "back pain", "chest pain", "a fever", "nausea",
    "dizziness", "a rash", "knee pain", "stomach pain", "shortness of breath", "fatigue",
    "ear pain",
)
_DURATIONS = (
    "one day", "two days", "three days", "four days", "five days", "a week", "two weeks",
    "three weeks", "a month", "two months",
)
_MEDS = (
    "ibuprofen", "acetaminophen", "lisinopril", "metformin", "atorvastatin", "amoxicillin",
    "omeprazole", "albuterol", "aspirin", "sertraline", "levothyroxine",
)
_FREQS = ("once a day", "twice a day", "every morning", "at night", "as needed")
_ALLERGENS = ("penicillin", "sulfa drugs", "peanuts", "latex", "shellfish", "codeine", "eggs")
_REACTIONS = ("a rash", "hives", "swelling", "itching")
_RELATIVES = ("mother", "father", "sister", "brother", "grandmother")
_CONDITIONS = ("diabetes", "high blood pressure", "heart disease", "asthma", "cancer", "a stroke")
_GREETINGS = ("Hello {title} {name}.", "Good morning {title} {name}.", "Hi {title} {name}.")


def _bare(symptom: str) -> str:
    """'a headache' -> 'headache' (for note style)."""
    return symptom[2:] if symptom.startswith("a ") else symptom


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _mid(subject: str) -> str:
    """A sentence-initial subject as it reads mid-sentence ('Sea levels' -> 'sea levels')."""
    first = subject.split()[0]
    return subject if first in _PROPER else subject[0].lower() + subject[1:]


def _dialogue_row(rng: random.Random, header: str) -> tuple[list[str], str]:
    """Return (turns, section_text) for one templated dialogue with the given header."""
    male = rng.random() < 0.5
    title = "Mr." if male else "Ms."
    pronoun = "He" if male else "She"
    noun = "man" if male else "woman"
    greet = rng.choice(_GREETINGS).format(title=title, name=rng.choice(_LAST_NAMES))
    symptom = rng.choice(_SYMPTOMS)
    duration = rng.choice(_DURATIONS)

    if header == "CC":
        ask = rng.choice(("What brings you in today?", "What seems to be the problem?",
                          "How can I help you today?"))
        said = rng.choice((f"I have had {symptom} for {duration}.",
                           f"For {duration} now I have had {symptom}.",
                           f"I have {symptom}. It started {duration} ago."))
        turns = [f"Doctor: {greet} {ask}", f"Patient: {said}"]
        if rng.random() < 0.5:
            turns += ["Doctor: Anything else?", "Patient: No, that is all."]
        return turns, f"{_cap(_bare(symptom))} for {duration}."

    if header == "GENHX":
        age = rng.randint(18, 89)
        said = rng.choice((f"I have had {symptom} for {duration}.",
                           f"I have {symptom}. It started {duration} ago."))
        turns = [f"Doctor: {greet} How old are you?", f"Patient: I am {age}.",
                 "Doctor: What brings you in?", f"Patient: {said}"]
        article = "an" if age == 18 or 80 <= age <= 89 else "a"
        text = f"The patient is {article} {age}-year-old {noun} with {_bare(symptom)} for {duration}."
        if rng.random() < 0.5:
            med = rng.choice(_MEDS)
            turns += ["Doctor: Have you taken anything for it?", f"Patient: I took {med}."]
            text += f" {pronoun} took {med}."
        else:
            turns += ["Doctor: Have you taken anything for it?", "Patient: No, nothing yet."]
        return turns, text

    if header == "MEDICATIONS":
        med, freq = rng.choice(_MEDS), rng.choice(_FREQS)
        turns = [f"Doctor: {greet} What medications are you taking?",
                 f"Patient: I take {med} {freq}."]
        text = f"{_cap(med)} {freq}."
        if rng.random() < 0.5:
            med2 = rng.choice([m for m in _MEDS if m != med])
            freq2 = rng.choice(_FREQS)
            turns += ["Doctor: Anything else?", f"Patient: Yes, {med2} {freq2}."]
            text = f"{_cap(med)} {freq} and {med2} {freq2}."
        else:
            turns += ["Doctor: Anything else?", "Patient: No, just that."]
        return turns, text

    if header == "ALLERGY":
        ask = rng.choice(("Do you have any allergies?", "Are you allergic to anything?"))
        if rng.random() < 0.7:
            allergen, reaction = rng.choice(_ALLERGENS), rng.choice(_REACTIONS)
            turns = [f"Doctor: {greet} {ask}", f"Patient: Yes, I am allergic to {allergen}.",
                     "Doctor: What happens?", f"Patient: I get {reaction}."]
            return turns, f"Allergic to {allergen}, which causes {reaction}."
        turns = [f"Doctor: {greet} {ask}", "Patient: No, none that I know of."]
        return turns, "No known allergies."

    if header == "FAM/SOCHX":
        relative, condition = rng.choice(_RELATIVES), rng.choice(_CONDITIONS)
        turns = [f"Doctor: {greet} Does anyone in your family have health problems?",
                 f"Patient: My {relative} has {condition}.", "Doctor: Do you smoke?"]
        if rng.random() < 0.5:
            turns.append("Patient: No, never.")
            smoke = "The patient does not smoke."
        else:
            turns.append("Patient: Yes, about a pack a day.")
            smoke = "The patient smokes a pack a day."
        return turns, f"{_cap(relative)} has {condition}. {smoke}"

    raise ValueError(f"unknown section header {header!r}")


def make_dialogue_summaries(n: int, seed: int = 0) -> list[dict]:
    """Generate ``n`` templated doctor-patient dialogues with their note section.

    Each row has exactly the MTS-Dialog columns: ``ID`` (str), ``section_header`` (one of
    :data:`SECTION_HEADERS`, cycled so they are balanced), ``dialogue`` ("Doctor: ..." /
    "Patient: ..." lines, 2-6 turns, at most 70 words) and ``section_text`` (the reference
    note section, one or two sentences, at most 25 words, built only from slots -- symptom,
    duration, age, medication, allergen, relative, smoking -- that the dialogue mentions).
    Deterministic in ``(n, seed)``; row ``i`` does not depend on ``n``.
    """
    rows: list[dict] = []
    for i in range(n):
        rng = random.Random(f"labscale-demo-dialogue:{seed}:{i}")
        header = SECTION_HEADERS[i % len(SECTION_HEADERS)]
        turns, text = _dialogue_row(rng, header)
        rows.append({"ID": f"demo-{seed}-{i:04d}", "section_header": header,
                     "dialogue": "\n".join(turns), "section_text": text})
    return rows


# --------------------------------------------------------------------------- claim slots

# (subject, verb phrase claimed, its negation, an antonym phrase), all agreeing in number.
_FACTS = (
    ("Global temperatures", "have risen", "have not risen", "have fallen"),
    ("Arctic sea ice", "has shrunk", "has not shrunk", "has grown"),
    ("Sea levels", "have risen", "have not risen", "have fallen"),
    ("Carbon dioxide levels", "have increased", "have not increased", "have decreased"),
    ("Alpine glaciers", "have melted", "have not melted", "have grown"),
    ("Heat waves", "have become more common", "have not become more common",
     "have become less common"),
    ("Ocean acidity", "has increased", "has not increased", "has decreased"),
    ("Solar activity", "has declined", "has not declined", "has increased"),
    ("Methane emissions", "have increased", "have not increased", "have decreased"),
    ("Snow cover in spring", "has decreased", "has not decreased", "has increased"),
    ("Coral bleaching", "has become more frequent", "has not become more frequent",
     "has become less frequent"),
    ("Wildfire seasons", "have grown longer", "have not grown longer", "have grown shorter"),
)
_PROPER = frozenset({"Arctic", "Alpine"})
_PERIODS = ("since 1900", "since 1950", "since 1980", "over the last century",
            "in recent decades", "over the past forty years")
_CLAIM_FRAMES = ("{s} {v} {p}.", "Scientists say that {s_l} {v} {p}.",
                 "It is true that {s_l} {v} {p}.")
_SUPPORT_FRAMES = ("Measurements show that {s_l} {v} {p}.", "Data confirm that {s_l} {v} {p}.",
                   "Studies find that {s_l} {v} {p}.")
# Unrelated-topic evidence (no climate subject, no negation): the NOT_ENOUGH_INFO cue.
_UNRELATED = (
    "The city council approved a new budget for schools.",
    "The local football team won the cup final in May.",
    "A new bridge across the river opened to traffic.",
    "The museum added a collection of old coins.",
    "Train tickets became cheaper for students this year.",
    "The library extended its opening hours on weekends.",
    "A bakery on the main street sells fresh bread daily.",
    "The film festival showed more than fifty movies.",
    "Farmers sold apples and pears at the market.",
    "The company hired new engineers for its software team.",
    "The orchestra played a concert in the park.",
    "Many tourists visited the castle during the summer.",
)


def make_claim_checks(n: int, seed: int = 0) -> list[dict]:
    """Generate ``n`` claim/evidence pairs with a SUPPORTS / REFUTES / NOT_ENOUGH_INFO label.

    Columns: ``claim_id`` (str), ``claim``, ``evidence``, ``label``. Labels cycle through
    :data:`CLAIM_LABELS`, so any ``n`` is balanced to within one row. The label follows from
    lexical cues: SUPPORTS evidence restates the claim; REFUTES evidence repeats the subject
    with a negation ("have not risen") or an antonym ("have fallen"); NOT_ENOUGH_INFO evidence
    is about an unrelated topic (mostly everyday news, sometimes a different climate subject).
    Deterministic in ``(n, seed)``; row ``i`` does not depend on ``n``.
    """
    rows: list[dict] = []
    for i in range(n):
        rng = random.Random(f"labscale-demo-claim:{seed}:{i}")
        label = CLAIM_LABELS[i % len(CLAIM_LABELS)]
        subject, verb, negated, antonym = rng.choice(_FACTS)
        period = rng.choice(_PERIODS)
        s_l = _mid(subject)
        claim = rng.choice(_CLAIM_FRAMES).format(s=subject, s_l=s_l, v=verb, p=period)
        frame = rng.choice(_SUPPORT_FRAMES)
        if label == "SUPPORTS":
            evidence = frame.format(s_l=s_l, v=verb, p=period)
        elif label == "REFUTES":
            evidence = frame.format(s_l=s_l, v=rng.choice((negated, antonym)), p=period)
        else:
            if rng.random() < 0.75:
                evidence = rng.choice(_UNRELATED)
            else:
                other = rng.choice([f for f in _FACTS if f[0] != subject])
                o_l = _mid(other[0])
                evidence = frame.format(s_l=o_l, v=other[1], p=rng.choice(_PERIODS))
        rows.append({"claim_id": f"demo-{seed}-{i:04d}", "claim": claim, "evidence": evidence,
                     "label": label})
    return rows


# --------------------------------------------------------------------------- files

def write_demo_data(out_dir: Path) -> dict[str, Path]:
    """Write the committed demo files (400 rows each, seed 0) into ``out_dir``.

    Returns ``{"dialogues": out_dir/"demo-dialogues.jsonl", "claims": out_dir/"demo-claims.jsonl"}``.
    One JSON object per line, UTF-8, sorted keys; the output is byte-for-byte reproducible.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in DEMO_FILES.items()}
    write_jsonl(paths["dialogues"], make_dialogue_summaries(DEMO_ROWS, seed=0))
    write_jsonl(paths["claims"], make_claim_checks(DEMO_ROWS, seed=0))
    return paths


# --------------------------------------------------------------------------- tokenizer text

_PROMPT_TEXTS = (
    "Summarize the doctor-patient dialogue into the clinical note section named by the header.",
    "Summarize the dialogue into the note section.",
    "Does the evidence support or refute the claim? "
    "Answer with one of: SUPPORTS, REFUTES, NOT_ENOUGH_INFO.",
    "Section: {section}\nDialogue:\n{dialogue}\nSummary:",
    "Claim: {claim}\nEvidence: {evidence}\nAnswer:",
    "Label: SUPPORTS\nLabel: REFUTES\nLabel: NOT_ENOUGH_INFO",
    "Let's think step by step.",
    "[INST] {prompt} [/INST]",
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    "Instruction: Input: Response: Answer: Label: Summary: Section: Dialogue: Claim: Evidence:",
    "Yes\nNo\nyes\nno\nunanswerable\nThe answer is",
)


def tokenizer_corpus() -> list[str]:
    """Texts to train the tiny demo tokenizer on (deterministic).

    Prompt scaffolding words (instructions, "Claim:", "[INST]", "### Response:", label names,
    "Let's think step by step") plus 2,000 generated examples of each task, rendered the way
    the prompts show them, from seeds that differ from the committed demo files.
    """
    texts: list[str] = list(_PROMPT_TEXTS)
    for row in make_dialogue_summaries(2000, seed=101):
        texts.append(f"Section: {row['section_header']}\nDialogue:\n{row['dialogue']}\n"
                     f"Summary: {row['section_text']}")
    for row in make_claim_checks(2000, seed=102):
        texts.append(f"Claim: {row['claim']}\nEvidence: {row['evidence']}\n"
                     f"Answer: {row['label']}")
    return texts


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m labscale.demo.data --out studies/data`` (re)writes the demo files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    args = parser.parse_args(argv)
    for path in write_demo_data(args.out).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
