"""The demo's synthetic data and the project-built tiny Llama: deterministic, documented, loadable."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from labscale.demo.data import (
    CLAIM_COLUMNS,
    CLAIM_LABELS,
    DEMO_FILES,
    DIALOGUE_COLUMNS,
    SECTION_HEADERS,
    make_claim_checks,
    make_dialogue_summaries,
    tokenizer_corpus,
    write_demo_data,
)

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "studies" / "data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- data


def test_dialogue_summaries_deterministic_and_shaped() -> None:
    rows = make_dialogue_summaries(200, seed=3)
    assert rows == make_dialogue_summaries(200, seed=3)
    assert rows[:50] == make_dialogue_summaries(50, seed=3)  # row i does not depend on n
    assert rows != make_dialogue_summaries(200, seed=4)
    assert len({r["ID"] for r in rows}) == 200
    for r in rows:
        assert tuple(r) == DIALOGUE_COLUMNS
        assert all(isinstance(r[c], str) and r[c] for c in DIALOGUE_COLUMNS)
        assert r["section_header"] in SECTION_HEADERS
        lines = r["dialogue"].split("\n")
        assert 2 <= len(lines) <= 6
        assert all(line.startswith(("Doctor: ", "Patient: ")) for line in lines)
        assert len(r["dialogue"].split()) <= 70
        assert len(r["section_text"].split()) <= 25
    assert set(Counter(r["section_header"] for r in rows)) == set(SECTION_HEADERS)
    assert len({r["section_text"] for r in rows}) > 100  # not trivially constant


def test_dialogue_summary_is_derivable_from_dialogue() -> None:
    for r in make_dialogue_summaries(100, seed=5):
        dialogue = r["dialogue"].lower()
        if r["section_header"] == "CC":
            symptom = r["section_text"].split(" for ")[0].lower()
            assert symptom in dialogue
        if r["section_header"] == "MEDICATIONS":
            assert r["section_text"].split()[0].lower() in dialogue


def test_claim_checks_deterministic_balanced_and_shaped() -> None:
    rows = make_claim_checks(300, seed=3)
    assert rows == make_claim_checks(300, seed=3)
    assert rows[:40] == make_claim_checks(40, seed=3)
    assert rows != make_claim_checks(300, seed=4)
    assert len({r["claim_id"] for r in rows}) == 300
    for r in rows:
        assert tuple(r) == CLAIM_COLUMNS
        assert all(isinstance(r[c], str) and r[c] for c in CLAIM_COLUMNS)
        assert r["label"] in CLAIM_LABELS
        assert len(r["claim"].split()) <= 25 and len(r["evidence"].split()) <= 25
        if r["label"] == "SUPPORTS":
            assert r["claim"].split(" that ")[-1].lower() in r["evidence"].lower()
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(CLAIM_LABELS)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_committed_demo_files_match_generator(tmp_path: Path) -> None:
    paths = write_demo_data(tmp_path)
    assert set(paths) == set(DEMO_FILES)
    for key, path in paths.items():
        assert path == tmp_path / DEMO_FILES[key]
        assert len(path.read_text(encoding="utf-8").splitlines()) == 400
        committed = COMMITTED / DEMO_FILES[key]
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is stale: run `python -m labscale.demo.data --out studies/data`"
        )


def test_tokenizer_corpus_deterministic() -> None:
    corpus = tokenizer_corpus()
    assert corpus == tokenizer_corpus()
    text = "\n".join(corpus)
    for word in ("Summarize", "Claim:", "Evidence:", "Answer:", "Let's think step by step",
                 "[INST]", "[/INST]", "### Instruction:", "### Response:", *CLAIM_LABELS):
        assert word in text


# ----------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="module")
def tiny_dir(tiny_cache: Path) -> Path:
    from labscale.models.tiny import ensure_tiny_llama

    return ensure_tiny_llama(tiny_cache)


def test_build_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    from labscale.models.tiny import build_tiny_llama

    again = build_tiny_llama(tmp_path / "again")
    assert again == tmp_path / "again"
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _sha256(again / name) == _sha256(tiny_dir / name), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    build_tiny_llama(again)  # rebuilding over an existing dir replaces it
    assert _sha256(again / "model.safetensors") == _sha256(tiny_dir / "model.safetensors")


def test_built_model_loads_and_tokenizer_round_trips(tiny_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from labscale.models.tiny import TinyLlamaRecipe

    tok = AutoTokenizer.from_pretrained(tiny_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    recipe = TinyLlamaRecipe()
    assert model.config.model_type == "llama"
    assert model.config.hidden_size == recipe.hidden_size
    assert model.config.vocab_size == len(tok) <= recipe.vocab_size
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert {tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token} == {"<s>", "</s>", "<pad>", "<unk>"}
    assert sum(p.numel() for p in model.parameters()) <= 5_000_000

    dialogue = make_dialogue_summaries(2, seed=9)[1]["dialogue"]
    ids = tok(dialogue)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == dialogue

    batch = tok(["Claim: sea levels", dialogue], return_tensors="pt", padding=True)
    assert batch["input_ids"][0, 0].item() == tok.pad_token_id  # left padding
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)


def test_ensure_reuses_existing_build(tiny_cache: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labscale.models import tiny

    assert tiny_dir.parent == tiny_cache
    assert tiny_dir.name == f"tiny-llama-v{tiny.TINY_LLAMA_RECIPE_VERSION}-{tiny.recipe_hash(tiny.TinyLlamaRecipe())}"
    mtime = (tiny_dir / "model.safetensors").stat().st_mtime_ns

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("ensure_tiny_llama rebuilt an existing model")

    monkeypatch.setattr(tiny, "_build_into", no_build)
    assert tiny.ensure_tiny_llama(tiny_cache) == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tiny_cache.iterdir()) == [tiny_dir.name]
    other = tiny.TinyLlamaRecipe(seed=1)
    assert tiny.recipe_hash(other) != tiny.recipe_hash(tiny.TinyLlamaRecipe())
