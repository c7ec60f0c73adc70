"""Prompt compilation: a bounded search for a cell's prompt on the validation split only.

Coordinate ascent over two axes, as the seeds' prompt engineering did by hand: first the instruction
(the task's own, then each variant, all zero-shot), then demonstration subsets of the few-shot pool
(for each count k: the pool's first k, then seeded random k-subsets) with the best instruction. Each
candidate answers the same `val_items` validation items and is scored with the task's own metric
suite; the first candidate with the highest score wins, so the task's own zero-shot prompt is beaten
or kept, never lost. The search stops before a candidate that would pass `max_calls` (or once
`max_tokens` is spent) and says how many candidates it skipped.

The search sees only validation rows and the few-shot pool (train rows); it never receives a test
row. Every trial is journaled through `journal`, so an interrupted search resumes without paying twice.
The candidates are answered by whatever `Answerer` the caller gives (the generate stage's: the cell's
model through labscale.models.client).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from labscale.config.study import CompileConfig
from labscale.metrics import PRIMARY_METRIC, compute_suite
from labscale.models.calls import Prompt, Reply
from labscale.tasks.base import TaskDef


@dataclass(frozen=True)
class Candidate:
    instruction: str
    demo_ids: tuple[int, ...]
    """Indices into the few-shot pool."""


@dataclass
class Trial:
    """A candidate's result on the validation items."""

    candidate: Candidate
    score: float
    calls: int
    tokens_in: int
    tokens_out: int
    usd: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Trial":
        cand = data["candidate"]
        return cls(**{**data, "candidate": Candidate(cand["instruction"], tuple(cand["demo_ids"]))})


@dataclass
class SearchResult:
    metric: str
    prompt: Prompt
    """The winner's prompt: what the cell's test items are answered with."""
    best: Candidate
    best_score: float
    baseline_score: float
    """The task's own instruction, zero-shot, on the same validation items."""
    trials: list[Trial] = field(default_factory=list)
    skipped: int = 0
    """Candidates left untried by the call / token budget."""

    def cost(self) -> dict[str, float]:
        """Calls, tokens and API dollars the search spent (all its trials, resumed ones included)."""
        return {"search_calls": sum(t.calls for t in self.trials),
                "search_tokens_in": sum(t.tokens_in for t in self.trials),
                "search_tokens_out": sum(t.tokens_out for t in self.trials),
                "search_usd": sum(t.usd for t in self.trials)}

    def to_json(self) -> dict[str, Any]:
        """prompt.json: the chosen prompt and how it was found."""
        return {"instruction": self.prompt.instruction, "demonstrations": self.prompt.demos, "cot": self.prompt.cot,
                "search": {"metric": self.metric, "best": asdict(self.best), "best_score": self.best_score,
                           "baseline_score": self.baseline_score, "skipped": self.skipped, **self.cost(),
                           "trials": [t.to_json() for t in self.trials]}}


Answerer = Callable[[Prompt, Sequence[dict]], list[Reply]]
"""(prompt, validation rows) → one answer per row, from the cell's model."""


def demo_subsets(pool_size: int, shots: Sequence[int], sets: int, seed: int) -> list[tuple[int, ...]]:
    """For each count k > 0: the pool's first k, then seeded random k-subsets (distinct, in pool order)."""
    rng = random.Random(seed)
    subsets: list[tuple[int, ...]] = []
    for k in shots:
        if k == 0 or k > pool_size:
            continue
        found = [tuple(range(k))]
        for _ in range(sets * 4):  # a few extra draws in case of repeats
            if len(found) == sets:
                break
            subset = tuple(sorted(rng.sample(range(pool_size), k)))
            if subset not in found:
                found.append(subset)
        subsets.extend(found)
    return subsets


class PromptSearch:
    """The bounded search of one compiled cell (see the module docstring)."""

    def __init__(self, config: CompileConfig, task: TaskDef, pool: Sequence[dict], cot: bool, seed: int,
                 journal: dict[int, Trial] | None = None, on_trial: Callable[[int, Trial], None] | None = None):
        self.config, self.task, self.pool, self.cot, self.seed = config, task, pool, cot, seed
        self.metric = PRIMARY_METRIC.get(task.metric_suite, "")
        if not self.metric:
            raise ValueError(f"metric suite {task.metric_suite!r} has no primary metric to compile prompts by")
        self.journal = dict(journal or {})
        self.on_trial = on_trial
        self.trials: list[Trial] = []
        self.skipped = 0

    def prompt(self, candidate: Candidate) -> Prompt:
        demos = tuple((self.pool[i]["input"], self.pool[i]["target"]) for i in candidate.demo_ids)
        return Prompt(candidate.instruction, demos, self.cot)

    def _score(self, answers: list[Reply], rows: Sequence[dict]) -> float:
        suite = self.task.metric_suite
        options = {"bertscore": False} if suite == "summarization" else {}
        metrics, _ = compute_suite(suite, [a.text for a in answers], [r["target"] for r in rows],
                                   list(self.task.labels) or None, options,
                                   attributes=[r.get("attributes") or {} for r in rows])
        return float(metrics[self.metric])

    def _affordable(self, rows: Sequence[dict]) -> bool:
        spent = sum(t.calls for t in self.trials)
        tokens = sum(t.tokens_in + t.tokens_out for t in self.trials)
        max_tokens = self.config.max_tokens
        return spent + len(rows) <= self.config.max_calls and (max_tokens is None or tokens < max_tokens)

    def _try(self, candidate: Candidate, answer: Answerer, rows: Sequence[dict]) -> Trial:
        number = len(self.trials)
        trial = self.journal.get(number)
        if trial is None or trial.candidate != candidate:
            answers = answer(self.prompt(candidate), rows)
            trial = Trial(candidate, self._score(answers, rows), len(rows), sum(a.tokens_in for a in answers),
                          sum(a.tokens_out for a in answers), sum(a.usd for a in answers))
            if self.on_trial is not None:
                self.on_trial(number, trial)
        self.trials.append(trial)
        return trial

    def _best_of(self, candidates: list[Candidate], answer: Answerer, rows: Sequence[dict],
                 best: Trial | None) -> Trial | None:
        for i, candidate in enumerate(candidates):
            if best is not None and not self._affordable(rows):
                self.skipped += len(candidates) - i
                break
            trial = self._try(candidate, answer, rows)
            if best is None or trial.score > best.score:
                best = trial
        return best

    def run(self, answer: Answerer, val_rows: Sequence[dict]) -> SearchResult:
        """Search with `answer` on the first `val_items` validation rows; the best candidate wins."""
        rows = list(val_rows[: self.config.val_items])
        instructions = list(dict.fromkeys([self.task.instruction, *self.config.instructions]))
        best = self._best_of([Candidate(text, ()) for text in instructions], answer, rows, None)
        assert best is not None  # the task's own instruction is always tried
        baseline = self.trials[0].score
        subsets = demo_subsets(len(self.pool), self.config.shots, self.config.demo_sets, self.seed)
        best = self._best_of([Candidate(best.candidate.instruction, s) for s in subsets], answer, rows, best)
        assert best is not None
        return SearchResult(self.metric, self.prompt(best.candidate), best.candidate, best.score, baseline,
                            self.trials, self.skipped)
