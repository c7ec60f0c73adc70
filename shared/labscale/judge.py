"""The "what is missing" judge (seed 004): an LLM rates a response 1–10 as `[[n]]` and says what the
response lacks as `[[[…]]]`; the reward mixes both:

    reward = (1 − ζ)·(r − 5)/5 + ζ·cos(emb(response), emb(missing))

with sentence embeddings from the offline all-MiniLM-L6-v2 (mean pooling over the attention mask,
then L2-normalised, as sentence-transformers does for that model).

The judge is any model of the study, called through labscale.models.client: an open model (its
family's prompt preset, batched greedy generation) or an API model (priced per token). Every judge
reply is journaled in the store under the calling run's prefix (`<run>/judge/<sha>.json`, the
`Reply`'s fields as JSON), so a rerun never re-asks (or re-pays) a judgement.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labscale.jsonl import read_jsonl
from labscale.metrics import default_bertscore_model
from labscale.models.calls import Prompt, Reply
from labscale.models.client import model_client
from labscale.models.embeddings import mean_pooled
from labscale.params import ApiRuntime, ModelParams, ScoreParams

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from labscale.stage import StageContext

JUDGE_INSTRUCTION = (
    "You are a strict judge of an assistant's response to a request. Rate how well the response fulfils the "
    "request on a scale of 1 to 10, where 10 is perfect, and write the rating in double square brackets, "
    "e.g. [[6]]. Then say what is missing from the response in triple square brackets, e.g. "
    "[[[the patient's dosage and follow-up date]]]. Give exactly one rating and one what-is-missing text."
)
RATING_RANGE = (1, 10)
_TRIPLE = re.compile(r"\[\[\[(.*?)\]\]\]", re.DOTALL)
_DOUBLE = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


def judge_query(instruction: str, request: str, response: str) -> str:
    """The judge's user turn: the task's instruction and input, then the response to judge."""
    return f"[Request]\n{instruction}\n\n{request}\n\n[Response]\n{response}\n\n[Your judgement]"


@dataclass(frozen=True)
class Judgement:
    """A parsed judge reply; `valid` only with exactly one in-range rating and one non-empty missing text."""

    rating: int | None
    missing: str | None
    valid: bool
    reason: str | None = None
    """Why the reply is invalid (None when valid)."""


def _invalid(reason: str, rating: int | None = None, missing: str | None = None) -> Judgement:
    return Judgement(rating, missing, False, reason)


def parse_judgement(text: str) -> Judgement:
    """Parse `[[n]]` and `[[[missing]]]` out of a judge reply; text around them is ignored.

    Invalid (with a reason): unbalanced or nested brackets, no or several ratings, a rating that is not
    a whole number in 1–10, no or several what-is-missing texts, an empty one.
    """
    if re.search(r"\[{4,}|\]{4,}", text):
        return _invalid("unbalanced or nested brackets")
    missing_texts = _TRIPLE.findall(text)
    rest = _TRIPLE.sub(" ", text)
    ratings = _DOUBLE.findall(rest)
    leftover = _DOUBLE.sub(" ", rest)
    if "[[" in leftover or "]]" in leftover or any("[[" in m or "]]" in m for m in missing_texts) \
            or any("[" in r or "]" in r for r in ratings):
        return _invalid("unbalanced or nested brackets")
    missing = missing_texts[0].strip() if len(missing_texts) == 1 else None
    if not ratings:
        return _invalid("no [[rating]]", missing=missing)
    if len(ratings) > 1:
        return _invalid(f"{len(ratings)} ratings (expected one)", missing=missing)
    raw = ratings[0].strip()
    if not re.fullmatch(r"[+-]?\d+", raw):
        return _invalid(f"rating {raw!r} is not a whole number", missing=missing)
    rating = int(raw)
    low, high = RATING_RANGE
    if not low <= rating <= high:
        return _invalid(f"rating {rating} outside {low}-{high}", missing=missing)
    if not missing_texts:
        return _invalid("no [[[what is missing]]]", rating)
    if len(missing_texts) > 1:
        return _invalid(f"{len(missing_texts)} what-is-missing texts (expected one)", rating)
    if not missing:
        return _invalid("empty [[[what is missing]]]", rating)
    return Judgement(rating, missing, True)


class Embedder:
    """Sentence embeddings from a sentence-transformers checkpoint folder (default: the offline MiniLM):
    token embeddings mean-pooled over the attention mask, then L2-normalised."""

    def __init__(self, path: str | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.path = path or default_bertscore_model()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).eval()
        self.max_length = _max_seq_length(self.path)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """One unit-length row per text."""
        import numpy as np

        pooled = mean_pooled(self.model, self.tokenizer, texts, self.max_length, batch_size)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _max_seq_length(path: str) -> int:
    """sentence-transformers' max_seq_length for the checkpoint (256 for all-MiniLM-L6-v2), else 512."""
    config = Path(path) / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 512)) if config.exists() else 512


@functools.cache
def embedder(path: str | None = None) -> Embedder:
    """One loaded Embedder per checkpoint path."""
    return Embedder(path)


def reward(rating: int, similarity: float, zeta: float) -> float:
    """(1 − ζ)·(r − 5)/5 + ζ·similarity, the seed's reward for one judged response."""
    return (1 - zeta) * (rating - 5) / 5 + zeta * similarity


def rewards(judgements: Sequence[Judgement], responses: Sequence[str], zeta: float,
            embed: Embedder | None = None) -> list[float | None]:
    """Each response's reward (None where its judgement is invalid); cos via unit-length embeddings."""
    valid = [i for i, j in enumerate(judgements) if j.valid]
    out: list[float | None] = [None] * len(judgements)
    if not valid:
        return out
    embed = embed or embedder()
    response_vecs = embed.encode([responses[i] for i in valid])
    missing_vecs = embed.encode([judgements[i].missing or "" for i in valid])
    for row, i in enumerate(valid):
        similarity = float(response_vecs[row] @ missing_vecs[row])
        out[i] = reward(judgements[i].rating or 0, similarity, zeta)
    return out


class JudgeClient:
    """One judge model of the study, its replies journaled under the run's prefix. `runtime`: an API
    judge's call settings (None for an open judge, or an API judge's defaults)."""

    def __init__(self, ctx: StageContext, model: ModelParams, runtime: ApiRuntime | None, max_new_tokens: int,
                 batch_size: int = 8):
        self.ctx, self.model, self.runtime = ctx, model, runtime
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.journal = f"{ctx.spec.prefix}/judge"
        self.client = model_client(model, max_new_tokens, runtime=runtime, batch_size=batch_size)

    def _key(self, query: str) -> str:
        digest = hashlib.sha256(json.dumps([self.model.model_dump(mode="json"), self.max_new_tokens, query]
                                           ).encode()).hexdigest()
        return f"{self.journal}/{digest[:32]}.json"

    def judge(self, queries: Sequence[str]) -> list[Reply]:
        """The judge's reply to each query (see `judge_query`), asking only for those not journaled yet."""
        backend = self.ctx.store.backend
        known = set(backend.list(f"{self.journal}/"))
        replies = {q: Reply(**json.loads(backend.get_bytes(self._key(q))))
                   for q in set(queries) if self._key(q) in known}
        todo = sorted(set(queries) - set(replies))
        self.ctx.log.info("judge %s: %d judgements journaled before, %d to ask", self.model.path,
                          len(replies), len(todo))

        bar = self.ctx.progress(len(todo), "judge", unit="item")

        def record(query: str, reply: Reply) -> None:
            backend.put_bytes(self._key(query), json.dumps(asdict(reply)).encode())
            replies[query] = reply
            bar.update(1)

        try:
            if todo:
                self._ask(todo, record)
        finally:
            bar.close()
        return [replies[q] for q in queries]

    def _ask(self, queries: list[str], record: Any) -> None:
        """The judge's replies to `queries`, each `record`ed as it lands. An open judge is handed a few
        batches at a time (each chunk length-sorted into its batches, as it always was), an API judge
        everything (its requests run concurrently)."""
        client = self.client
        if client.unpriced:
            self.ctx.log.warning("judge %s is not in the price table: its cost counts as $0 — fix: give "
                                 "models[].price in the study", self.model.path)
        requests, _ = client.requests(Prompt(JUDGE_INSTRUCTION), queries, fit=False)
        items = list(zip(queries, requests))
        chunk = len(items) if self.model.is_api else self.batch_size * 4
        for start in range(0, len(items), chunk):
            client.answer(items[start:start + chunk], record)


@dataclass(frozen=True)
class JudgedItem:
    """One judged response: the parsed judgement, its reward and what the judge call cost."""

    judgement: Judgement
    reward: float | None
    reply: Reply

    def fields(self) -> dict[str, Any]:
        """Per-item fields (score's per_item.jsonl)."""
        j = self.judgement
        return {"judge_rating": j.rating, "judge_missing": j.missing, "judge_valid": j.valid,
                "judge_reason": j.reason, "judge_reward": self.reward}


def judge_responses(client: JudgeClient, instruction: str, requests: Sequence[str], responses: Sequence[str],
                    zeta: float) -> list[JudgedItem]:
    """Judge each (request, response) pair and reward it."""
    replies = client.judge([judge_query(instruction, q, r) for q, r in zip(requests, responses)])
    judgements = [parse_judgement(r.text) for r in replies]
    return [JudgedItem(j, w, r) for j, w, r in zip(judgements, rewards(judgements, responses, zeta), replies)]


def summary(items: Sequence[JudgedItem]) -> dict[str, float]:
    """Corpus metrics: judge_invalid_rate, and (when any judgement is valid) judge_rating_mean and
    judge_reward_mean over the valid ones."""
    valid = [i for i in items if i.judgement.valid]
    metrics = {"judge_invalid_rate": 1 - len(valid) / len(items) if items else 0.0}
    if valid:
        metrics["judge_rating_mean"] = sum(i.judgement.rating or 0 for i in valid) / len(valid)
        metrics["judge_reward_mean"] = sum(i.reward or 0.0 for i in valid) / len(valid)
    return metrics


def cost(items: Sequence[JudgedItem]) -> dict[str, float | int]:
    """What judging cost: tokens and API dollars."""
    return {"judge_tokens_in": sum(i.reply.tokens_in for i in items),
            "judge_tokens_out": sum(i.reply.tokens_out for i in items),
            "judge_usd": sum(i.reply.usd for i in items)}


def judge_predictions(ctx: StageContext, predictions: Sequence[dict[str, Any]]
                      ) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, float | int]]:
    """Score's judge step (`judge` in its params): the cell's test responses judged against their
    inputs (prep's test.jsonl); returns (corpus metrics, per-item fields, cost)."""
    params = ctx.params
    assert isinstance(params, ScoreParams) and params.judge is not None
    config = params.judge
    prep = ctx.fetch("prep")
    instruction = json.loads((prep / "task.json").read_text())["task"]["instruction"]
    inputs = {r["id"]: r["input"] for r in read_jsonl(prep / "test.jsonl")}
    client = JudgeClient(ctx, config.model, ctx.spec.runtime.judge, config.max_new_tokens, config.batch_size)
    items = judge_responses(client, instruction, [inputs[p["id"]] for p in predictions],
                            [p["prediction"] for p in predictions], config.zeta)
    return summary(items), [i.fields() for i in items], cost(items)
