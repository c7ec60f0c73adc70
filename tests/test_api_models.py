"""Closed models through the real `openai` client, against OpenAIDouble (a local TEST DOUBLE of the
chat-completions API on 127.0.0.1) that injects 429s, 500s, timeouts and malformed bodies."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli, small_study
from openai_double import OpenAIDouble

from labscale.errors import BadInputError
from labscale.models.api import ChatApi, backoff_seconds
from labscale.config.study import ModelPrice, TokenRates
from labscale.models.calls import Prompt
from labscale.models.client import model_client
from labscale.params import ModelParams
from labscale.prices import API_PRICES, api_price, training_price_per_mtok

pytest.importorskip("openai")
ITEMS = [f"question {i}" for i in range(12)]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-double")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _answer_all(double: OpenAIDouble, **kwargs) -> dict[str, object]:
    api = ChatApi("gpt-4o-mini", double.base_url, timeout_s=0.5, backoff_base_s=0.01, **kwargs)
    replies: dict[str, object] = {}
    api.answer_all([(q, [{"role": "user", "content": q}]) for q in ITEMS], 8, replies.__setitem__)
    return replies


def test_every_item_is_answered_once_through_faults() -> None:
    faults = {ITEMS[0]: ["429", "429"], ITEMS[1]: ["500"], ITEMS[2]: ["timeout"], ITEMS[3]: ["malformed", "500"]}
    with OpenAIDouble(answer=lambda q: f"answer to {q}", faults=faults, slow_s=1.0) as double:
        replies = _answer_all(double, max_retries=3, concurrency=4)
    assert sorted(replies) == sorted(ITEMS)
    assert all(r.text == f"answer to {q}" for q, r in replies.items())
    assert {q: r.attempts for q, r in replies.items() if r.attempts > 1} == {
        ITEMS[0]: 3, ITEMS[1]: 2, ITEMS[2]: 2, ITEMS[3]: 3}
    assert Counter(e.item for e in double.billed()) == Counter(ITEMS)  # each billed exactly once


def test_retries_are_bounded_and_the_failure_surfaces() -> None:
    import openai

    with OpenAIDouble(faults={ITEMS[5]: ["500"] * 10}) as double:
        with pytest.raises(openai.InternalServerError):
            _answer_all(double, max_retries=2, concurrency=2)
    assert sum(e.item == ITEMS[5] for e in double.exchanges) == 3  # 1 try + 2 retries


def test_a_refused_key_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(BadInputError, match="OPENAI_API_KEY"):
        ChatApi("gpt-4o-mini", "http://127.0.0.1:9/v1")


def test_backoff_is_exponential_with_jitter_and_honours_retry_after() -> None:
    delays = [backoff_seconds(5, base_s=0.5, cap_s=30.0) for _ in range(200)]
    assert 0 <= min(delays) < 1.0 < 7.0 < max(delays) <= 8.0  # full jitter over [0, 0.5 * 2**4]
    assert max(backoff_seconds(9, 0.5, 30.0) for _ in range(50)) <= 30.0
    assert backoff_seconds(1, 0.5, 30.0, retry_after=4.0) == 4.0


def _api_study(tmp_path: Path, base_url: str, test_items: int = 10) -> Path:
    model = (f"  - {{id: gpt, kind: openai, path: gpt-4o-mini, base_url: '{base_url}', concurrency: 3,"
             " max_retries: 4, timeout_s: 0.5}\n")
    study = small_study(tmp_path, settings="  - {id: zero-shot}\n  - {id: 2-shot, shots: 2}\n", models=model,
                        test_items=test_items)
    study.write_text(study.read_text() + "usd_per_hour: 0  # only API dollars in the results\n")
    return study


def _results(tmp_path: Path) -> list[dict[str, str]]:
    (path,) = (tmp_path / "store").glob("aggregate/*/results.csv")
    return list(csv.DictReader(path.open()))


def test_an_api_cell_runs_through_faults_and_costs_exactly_its_billed_usage(tmp_path: Path) -> None:
    answers = lambda q: "REFUTES" if "not" in q else "SUPPORTS"  # noqa: E731
    faults = [["429"], ["500"], ["malformed"], ["timeout"]]
    with OpenAIDouble(answer=answers, faults_by_arrival=faults, slow_s=1.0) as double:
        result = run_cli("run", str(_api_study(tmp_path, double.base_url)), cwd=tmp_path,
                         env={"OPENAI_API_KEY": "sk-test-double"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sk-test-double" not in result.stderr + result.stdout
    billed = Counter((e.item, e.turns) for e in double.billed())
    assert len(billed) == 20 and set(billed.values()) == {1}  # 10 items × 2 settings, each billed once
    price = API_PRICES["gpt-4o-mini"]
    expected = sum(price.usd(e.tokens_in, e.tokens_out) for e in double.billed())
    generates = [json.loads(p.read_text())["meta"] for p in (tmp_path / "store").glob("generate/*/_MANIFEST.json")]
    assert expected > 0 and sum(g["metrics"]["api_usd"] for g in generates) == pytest.approx(expected, rel=1e-12)
    rows = _results(tmp_path)  # a row's $ = its API dollars + the (CPU-priced) wall time of its runs
    assert sum(float(r["usd"]) for r in rows) == pytest.approx(sum(g["cost_usd"] for g in generates), abs=1e-5)
    assert all(r["n"] == "10" for r in rows)
    retried = sum(len(v) for v in double.faults.values())
    assert len(double.exchanges) == 20 + retried  # every fault cost exactly one retry


def test_an_interrupted_api_cell_resumes_without_requesting_answered_items_again(tmp_path: Path) -> None:
    with OpenAIDouble(refuse_after_ok=4) as double:
        study = _api_study(tmp_path, double.base_url)
        study.write_text(study.read_text().replace("  - {id: 2-shot, shots: 2}\n", ""))
        failed = run_cli("run", str(study), cwd=tmp_path, env={"OPENAI_API_KEY": "sk-test-double"})
        assert failed.returncode == 1 and "unavailable" in failed.stderr
        first_billed = [e.item for e in double.billed()]
        assert len(first_billed) >= 4
        double.refuse_after_ok = None
        resumed = run_cli("run", str(study), cwd=tmp_path, env={"OPENAI_API_KEY": "sk-test-double"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    billed = Counter(e.item for e in double.billed())
    assert len(billed) == 10 and set(billed.values()) == {1}  # nothing answered twice
    (predictions,) = (tmp_path / "store").glob("generate/*/predictions.jsonl")
    ids = [json.loads(line)["id"] for line in predictions.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 10


def test_a_closed_model_is_fine_tuned_through_the_api_and_a_rerun_reattaches_to_its_job(tmp_path: Path) -> None:
    with OpenAIDouble(answer=lambda q: "SUPPORTS") as double:
        model = (f"  - {{id: gpt, kind: openai, path: gpt-4o-mini, base_url: '{double.base_url}', max_retries: 1,"
                 " fine_tune_poll_s: 0.05}\n")
        study = small_study(tmp_path, settings="  - {id: ft, finetune: {epochs: 2, batch_size: 4}}\n", models=model,
                            test_items=4)
        study.write_text(study.read_text() + "usd_per_hour: 0\n")
        double.polls_failing = True  # the job is created, then the API goes away while we poll
        failed = run_cli("run", str(study), cwd=tmp_path, env={"OPENAI_API_KEY": "sk-test-double"})
        assert failed.returncode == 1 and len(double.jobs) == 1 and len(double.uploads) == 1
        double.polls_failing = False
        resumed = run_cli("run", str(study), cwd=tmp_path, env={"OPENAI_API_KEY": "sk-test-double"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(double.jobs) == 1 and len(double.uploads) == 1  # re-attached: no second upload or job
    job = double.jobs["ftjob-1"]
    assert job["model"] == "gpt-4o-mini" and job["hyperparameters"]["n_epochs"] == 2
    assert b'"role": "assistant"}]}' in double.uploads[0]  # chat-format training examples, one per line
    assert set(double.models_asked) == {"ft:gpt-4o-mini:labscale::ftjob-1"}  # generate used the tuned model
    (manifest,) = (tmp_path / "store").glob("train/*/_MANIFEST.json")
    train = json.loads(manifest.read_text())["meta"]
    assert train["metrics"]["model_id"] == "ft:gpt-4o-mini:labscale::ftjob-1"
    assert train["metrics"]["api_usd"] == pytest.approx(job["trained_tokens"] * 3.00 / 1e6)  # per trained token
    assert train["cost_usd"] - train["metrics"]["api_usd"] < 1e-3  # + a few CPU-priced seconds of polling
    (row,) = _results(tmp_path)
    # the failed first attempt counts: "(2 attempts)" once the results rows name them (issue 17 §1)
    assert row["train_path"] in ("api-fine-tune", "api-fine-tune (2 attempts)") and float(row["usd"]) > train["cost_usd"]


def test_a_rejected_request_is_bad_input_and_not_retried() -> None:
    with OpenAIDouble(faults={ITEMS[0]: ["400"]}) as double:
        with pytest.raises(BadInputError, match="rejected the request"):
            _answer_all(double, max_retries=3, concurrency=1)
    assert sum(e.item == ITEMS[0] for e in double.exchanges) == 1


# ── prices ───────────────────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize(("model", "per_1m"), [
    ("gpt-4o-2024-05-13", (5.00, 15.00)),         # a dated snapshot at its own price, not its alias's $2.50 / $10
    ("gpt-4o-2024-08-06", (2.50, 10.00)),
    ("gpt-3.5-turbo-0125", (0.50, 1.50)),
    ("gpt-4-0613", (30.00, 60.00)),
    ("gpt-4-turbo-preview", (10.00, 30.00)),
    ("ft:gpt-3.5-turbo-0125:acme::9xYz", (3.00, 6.00)),   # fine-tuned: its base's fine-tuned rates
    ("ft:gpt-4o-mini-2024-07-18:acme:run:abc", (0.30, 1.20)),
    ("gpt-4o-2099-01-01", None),                  # not listed: no price by prefix
    ("ft:my-llm:acme::1", None),
])
def test_the_price_table_lists_snapshots_by_exact_name(model: str, per_1m: tuple[float, float] | None) -> None:
    price = api_price(model)
    assert (price and (price.input_per_mtok, price.output_per_mtok)) == per_1m
    if price:  # 1,000 tokens in and out
        assert price.usd(1000, 1000) == pytest.approx((per_1m[0] + per_1m[1]) / 1000)
    assert training_price_per_mtok("gpt-3.5-turbo-0125") == 8.00 and training_price_per_mtok("gpt-4-0613") is None


def test_the_studys_price_prices_the_model_its_fine_tuned_model_and_its_training() -> None:
    price = ModelPrice(input_per_1m=1.0, output_per_1m=4.0, training_per_1m=9.0,
                       fine_tuned=TokenRates(input_per_1m=2.0, output_per_1m=8.0))
    mine = ModelParams(kind="openai", path="my-llm", price=price)
    assert (mine.token_price.input_per_mtok, mine.token_price.output_per_mtok) == (1.0, 4.0)
    assert mine.training_price == 9.0 and mine.fine_tuned_price.output_per_mtok == 8.0
    tuned = mine.model_copy(update={"path": "ft:my-llm:acme::1"})  # what generate calls after fine-tuning
    assert (tuned.token_price.input_per_mtok, tuned.token_price.output_per_mtok) == (2.0, 8.0)
    table = ModelParams(kind="openai", path="gpt-4o-mini")
    assert "price" not in table.model_dump() and "price" in mine.model_dump()  # keys of table-priced runs unchanged
    overridden = ModelParams(kind="openai", path="gpt-4o-mini", price=ModelPrice(input_per_1m=0, output_per_1m=0))
    assert overridden.token_price.usd(10**6, 10**6) == 0.0  # the study's price wins over the table


def test_the_api_client_charges_the_studys_price_per_reply() -> None:
    with OpenAIDouble(answer=lambda q: "three words here") as double:
        model = ModelParams(kind="openai", path="my-llm", base_url=double.base_url,
                            price=ModelPrice(input_per_1m=2.0, output_per_1m=10.0))
        client = model_client(model, max_new_tokens=8)
        replies = client.ask(Prompt("Answer.", (), False), ["question one", "question two"])
    assert not client.unpriced and double.models_asked == ["my-llm", "my-llm"]
    assert [r.tokens_out for r in replies] == [3, 3]
    for reply in replies:
        assert reply.usd == pytest.approx((reply.tokens_in * 2.0 + 3 * 10.0) / 1e6) and reply.usd > 0


PRICE_CASES = [
    ("unpriced", "  - {id: mine, kind: openai, path: my-llm}\n", "  - {id: zero-shot}\n",
     ["models[0].price", "'my-llm' is not in the price table", "would count as $0",
      "fix: give its list price, price: {input_per_1m: …, output_per_1m: …}"]),
    ("fine-tuned-without-training-price",
     "  - {id: mine, kind: openai, path: my-llm, price: {input_per_1m: 1, output_per_1m: 2}}\n",
     "  - {id: ft, finetune: {epochs: 1}}\n",
     ["models[0].price.training_per_1m", "setting 'ft' fine-tunes 'my-llm'", "fix: add price.training_per_1m"]),
    ("fine-tuned-without-fine-tuned-price",
     "  - {id: mine, kind: openai, path: my-llm, price: {input_per_1m: 1, output_per_1m: 2, training_per_1m: 3}}\n",
     "  - {id: ft, finetune: {epochs: 1}}\n",
     ["models[0].price.fine_tuned", "fix: add price.fine_tuned: {input_per_1m: …, output_per_1m: …}"]),
    ("snapshot-fine-tuned-without-table-rate", "  - {id: gpt4, kind: openai, path: gpt-4-0613}\n",
     "  - {id: ft, finetune: {epochs: 1}}\n", ["models[0].price.training_per_1m", "'gpt-4-0613'"]),
    ("open-model-with-price", "  - {id: tiny, path: tiny-llama, build: tiny-llama, price: {input_per_1m: 1, output_per_1m: 2}}\n",
     "  - {id: zero-shot}\n", ["models[0]", "only an openai model is priced per token", "remove 'price'"]),
]


@pytest.mark.parametrize(("name", "models", "settings", "fragments"), PRICE_CASES, ids=[c[0] for c in PRICE_CASES])
def test_an_unpriced_api_model_is_a_validate_error(tmp_path: Path, name: str, models: str, settings: str,
                                                     fragments: list[str]) -> None:
    study = small_study(tmp_path, settings=settings, models=models)
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [l for l in result.stderr.splitlines() if l.strip()]
    model_line = study.read_text().splitlines().index(models.rstrip("\n")) + 1
    assert f"{study}:{model_line}:" in line or name == "open-model-with-price"
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "store").exists()


def test_a_priced_api_model_validates(tmp_path: Path) -> None:
    models = ("  - {id: mine, kind: openai, path: my-llm, price: {input_per_1m: 1, output_per_1m: 2, training_per_1m: 3,"
              " fine_tuned: {input_per_1m: 2, output_per_1m: 4}}}\n  - {id: gpt, kind: openai, path: gpt-3.5-turbo-0125}\n")
    study = small_study(tmp_path, settings="  - {id: zero-shot}\n  - {id: ft, finetune: {epochs: 1}}\n", models=models)
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
