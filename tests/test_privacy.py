"""Privacy: DP-SGD LoRA fine-tuning (Opacus) and the membership-inference / canary audit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import REPO, run_cli, run_in_process

from labscale.config import load_study
from labscale.config.study import AuditConfig, DPConfig, TrainConfig
from labscale.params import ModelParams
from labscale.plan import build_plan
from labscale.training.audit import exposure, roc_auc
from labscale.training.data import canaries, with_canaries

RECIPE = ("{r: 8, learning_rate: 0.01, max_steps: 12, batch_size: 8, grad_accum: 1, warmup_steps: 0, "
          "gradient_checkpointing: false, max_length: 128, audit: {members: 8, canaries: 2, canary_repeats: 3, "
          "candidates: 31}")


def privacy_study(tmp_path: Path, settings: str | None = None, models: str = "") -> Path:
    """A study on the shipped MedQA-style fixture with an SFT and a DP-SGD setting, both audited."""
    dp = "dp: {target_epsilon: 50, max_grad_norm: 1.2}"
    settings = settings or (f"  - id: lora\n    finetune: {RECIPE}}}\n"
                            f"  - id: dp-lora\n    finetune: {RECIPE}, {dp}}}\n")
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: privacy\nstore: file://{tmp_path / 'store'}\n"
        "tasks:\n  - id: medqa\n    task: medqa\n"
        f"    source: {{files: {{train: {REPO}/studies/data/medqa-mini.jsonl}}}}\n"
        "    splits: {train: \"train[:70%]\", val: \"train[70%:80%]\", test: \"train[80%:]\"}\n"
        "    max_items: {test: 4}\n"
        "models:\n  - {id: tiny, path: tiny-llama, build: tiny-llama, max_length: 512}\n" + models +
        f"settings:\n{settings}generation: {{batch_size: 4, shard_size: 4}}\nscoring: {{bertscore: false}}\n")
    return study


def test_roc_auc_and_advantage_of_hand_made_losses() -> None:
    assert roc_auc([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]) == (1.0, 1.0)  # members always lower: a perfect attack
    auc, advantage = roc_auc([1.0, 3.0], [2.0, 4.0])  # 3 of the 4 member/non-member pairs ordered right
    assert auc == 0.75 and advantage == pytest.approx(0.5)
    assert roc_auc([0.5, 0.5], [0.5, 0.5])[0] == 0.5


def test_exposure_is_log2_candidates_minus_log2_rank() -> None:
    assert exposure(0.1, [1.0] * 255) == 8.0  # ranked first among 256
    assert exposure(9.0, [1.0] * 255) == 0.0  # ranked last
    assert exposure(2.0, [1.0] * 3 + [3.0] * 4) == pytest.approx(3 - 2)  # rank 4 of 8


def test_canaries_are_seeded_and_only_added_with_an_audit() -> None:
    rows = [{"input": f"q{i}", "completion": f"a{i}"} for i in range(20)]
    audit = AuditConfig(canaries=3, canary_repeats=2)
    mixed = with_canaries(rows, audit, seed=1)
    secrets = canaries(audit, 1)
    assert len(mixed) == 26 and all(mixed.count(s) == 2 for s in secrets)
    assert [r for r in mixed if r in rows] == rows  # the real rows keep their order
    assert mixed == with_canaries(rows, audit, seed=1) and secrets != canaries(audit, 2)
    assert all(len(s["completion"]) == 6 and s["completion"].isdigit() for s in secrets)
    assert with_canaries(rows, None, seed=1) == rows


def test_poisson_rate_steps_and_default_delta() -> None:
    from labscale.training.dp_sgd import dp_delta, planned_steps

    recipe = TrainConfig(batch_size=4, grad_accum=2, max_steps=-1, epochs=2.0)
    assert planned_steps(recipe, 42) == (8, 1 / 6, 12)  # 6 expected batches of 8 per epoch
    assert planned_steps(recipe.model_copy(update={"max_steps": 5}), 42)[2] == 5
    assert planned_steps(recipe, 5) == (5, 1.0, 2)  # fewer rows than a batch: every row, every step
    assert dp_delta(DPConfig(delta=None), 40) == 1 / 40 and dp_delta(DPConfig(delta=1e-5), 40) == 1e-5


def test_loss_is_on_the_completion_tokens_only() -> None:
    from labscale.models.loading import load_tokenizer
    from labscale.training.data import IGNORE, completion_tensors

    tok = load_tokenizer(ModelParams(path="tiny-llama", build="tiny-llama"), padding_side="right")
    pairs = [{"prompt": "Question: a b c\nAnswer:", "completion": " x y"}, {"prompt": "Q", "completion": " z"}]
    batch = completion_tensors(tok, pairs, max_length=64)
    for i, pair in enumerate(pairs):
        n_prompt = len(tok(pair["prompt"])["input_ids"])
        completion = tok(pair["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        labels = batch["labels"][i].tolist()
        assert labels[:n_prompt] == [IGNORE] * n_prompt
        assert labels[n_prompt:n_prompt + len(completion)] == completion
        assert set(labels[n_prompt + len(completion):]) <= {IGNORE}  # padding
        assert int(batch["attention_mask"][i].sum()) == n_prompt + len(completion)


def test_privacy_table_rows_come_from_train_metrics() -> None:
    from labscale.params import Cell
    from labscale.report.privacy import privacy_rows, privacy_section
    from labscale.report.runs import TrainMetrics

    cells = [Cell(task="t", model="m", setting=s, generate=f"generate/{s}", score=f"score/{s}", train=p) for s, p in
             [("zero-shot", None), ("lora", "train/a"), ("dp-lora", "train/b"), ("plain", "train/c")]]
    metrics = {prefix: TrainMetrics(path="lora-cpu", train_seconds=1.0, **m) for prefix, m in
               {"train/a": {"mia_auc": 0.7, "steps": 3}, "train/b": {"epsilon": 49.9, "mia_auc": 0.55},
                "train/c": {"steps": 3}}.items()}
    rows = privacy_rows(cells, metrics.__getitem__)
    assert rows == [{"task": "t", "model": "m", "setting": "lora", "mia_auc": 0.7},
                    {"task": "t", "model": "m", "setting": "dp-lora", "epsilon": 49.9, "mia_auc": 0.55}]
    text = privacy_section(rows).markdown()
    assert text.startswith("\n## Privacy") and privacy_section([]).markdown() == ""
    header, _, lora, dp = text.strip().splitlines()[-4:]
    assert [c.strip() for c in header.split("|")[4:6]] == ["epsilon", "mia_auc"]  # ε first, blank for non-DP
    assert lora.split("|")[4].strip() == "-" and dp.split("|")[4].strip() == "49.9"


def test_an_empty_poisson_batch_still_adds_noise_and_counts(tmp_path: Path) -> None:
    import torch
    from opacus import PrivacyEngine

    from labscale.training.dp_sgd import zero_grad_samples

    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=2)
    engine = PrivacyEngine()
    private, optimizer, _ = engine.make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                                                data_loader=data, noise_multiplier=1.0, max_grad_norm=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    zero_grad_samples(model)  # what the DP loop does instead of a forward pass on 0 rows
    optimizer.step()
    optimizer.zero_grad()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # pure noise moved them
    assert 0 < engine.get_epsilon(1e-5) < math.inf and engine.accountant.history[-1][-1] == 1


def test_dp_and_audit_only_enter_the_params_of_settings_that_use_them(tmp_path: Path) -> None:
    plain = "  - id: lora\n    finetune: {r: 8, max_steps: 2}\n"
    plan = build_plan(load_study(privacy_study(tmp_path, plain)))
    (train,) = [r for r in plan.runs if r.stage == "train"]
    assert train.params.train.dp is None and train.params.train.audit is None
    plan = build_plan(load_study(privacy_study(tmp_path)))
    recipes = {r.labels["setting"]: r.params.train for r in plan.runs if r.stage == "train"}
    assert recipes["lora"].dp is None and recipes["dp-lora"].dp.model_dump() == {
        "target_epsilon": 50.0, "delta": None, "max_grad_norm": 1.2, "accountant": "rdp"}
    assert recipes["lora"].audit == recipes["dp-lora"].audit


def test_dp_with_an_api_model_is_refused(tmp_path: Path) -> None:
    api = "  - {id: gpt, kind: openai, path: gpt-4o-mini}\n"
    study = privacy_study(tmp_path, "  - id: dp\n    finetune: {dp: {target_epsilon: 8}}\n", models=api)
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2
    assert "settings[0].finetune.dp" in result.stderr and "no differential privacy" in result.stderr
    assert "remove the openai model(s) from this study or the `dp` block" in result.stderr
    result = run_cli("validate", str(privacy_study(tmp_path, models=api)), cwd=tmp_path)
    assert result.returncode == 2 and "settings[0].finetune.audit" in result.stderr


def test_shipped_privacy_probe_plans_dp_next_to_its_non_dp_twin() -> None:
    plan = build_plan(load_study(REPO / "studies" / "privacy-probe.yaml"))
    recipes = {r.labels["setting"]: r.params.train for r in plan.runs if r.stage == "train"}
    assert set(recipes) == {"lora", "dp-lora"}
    assert recipes["dp-lora"].dp.target_epsilon == 50 and recipes["dp-lora"].dp.max_grad_norm == 1.2
    assert recipes["dp-lora"].model_copy(update={"dp": None}) == recipes["lora"]


@pytest.mark.slow
def test_dp_training_spends_finite_epsilon_and_differs_from_sft(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from labscale.models.loading import load_causal_lm

    plan = build_plan(load_study(privacy_study(tmp_path)))
    store = run_in_process(plan, ("prep", "train", "generate", "score", "aggregate"))
    trains = {r.labels["setting"]: r for r in plan.runs if r.stage == "train"}
    metrics = {s: store.require(r.prefix).meta["metrics"] for s, r in trains.items()}
    dp, sft = metrics["dp-lora"], metrics["lora"]
    assert dp["path"] == "dp-lora-cpu" and dp["steps"] == 12
    assert math.isfinite(dp["epsilon"]) and 0 < dp["epsilon"] <= 50 * 1.01
    assert dp["noise_multiplier"] > 0 and dp["max_grad_norm"] == 1.2
    assert dp["delta"] == pytest.approx(1 / dp["train_rows"]) and dp["train_rows"] == 42 + 2 * 3  # + canaries
    assert "epsilon" not in sft
    for m in (dp, sft):
        assert 0 <= m["mia_auc"] <= 1 and -1 <= m["mia_advantage"] <= 1 and m["mia_rows"] == 8  # 6 val + 4 test
        assert 0 <= m["canary_exposure"] <= m["canary_exposure_max"] == 5.0
    weights = {}
    for setting, spec in trains.items():
        adapter = tmp_path / setting
        store.fetch(spec.prefix, adapter)
        weights[setting] = load_file(adapter / "adapter" / "adapter_model.safetensors")
        load_causal_lm(spec.params.model, adapter / "adapter")  # loads like any fine-tuned cell
    assert weights["lora"].keys() == weights["dp-lora"].keys()
    assert any(not (weights["lora"][k] == weights["dp-lora"][k]).all() for k in weights["lora"])
    scores = {c.setting: store.require(c.score).meta["metrics"]["scores"] for c in plan.cells}
    assert all({"exact_match", "f1"} <= set(s) for s in scores.values())
    (agg,) = [r for r in plan.runs if r.stage == "aggregate"]
    table = {row["setting"]: row for row in store.require(agg.prefix).meta["metrics"]["privacy"]}
    assert table["dp-lora"]["epsilon"] == dp["epsilon"] and table["lora"]["mia_auc"] == sft["mia_auc"]
    assert "## Privacy" in store.backend.get_bytes(f"{agg.prefix}/results.md").decode()
