"""A tiny Llama-architecture model the project builds itself, for the offline demo and tests.

No download: a ByteLevel BPE tokenizer is trained with ``tokenizers`` on
:func:`labscale.demo.data.tokenizer_corpus` and a randomly initialised ``LlamaForCausalLM`` is
built from a :class:`TinyLlamaRecipe` with a fixed seed. The result is a normal Hugging Face
model directory (``config.json``, ``model.safetensors``, ``tokenizer.json``, ...) that loads
offline with ``AutoTokenizer`` / ``AutoModelForCausalLM``; a LoRA fine-tune of a couple of CPU
minutes visibly teaches it the demo tasks. Builds are deterministic: the same recipe gives
byte-identical ``model.safetensors`` and ``tokenizer.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from labscale.demo.data import tokenizer_corpus

__all__ = [
    "TINY_LLAMA_RECIPE_VERSION",
    "TinyLlamaRecipe",
    "build_tiny_llama",
    "ensure_tiny_llama",
    "recipe_hash",
]

TINY_LLAMA_RECIPE_VERSION = "1"
"""Bump when the build itself changes (tokenizer training, corpus, config fields), so cached
models under a new name are rebuilt."""

SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "</s>", "<pad>", "<unk>")
_BOS, _EOS, _PAD, _UNK = SPECIAL_TOKENS
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class TinyLlamaRecipe:
    """Size and seed of the tiny model (the defaults: ~1.4M parameters, tied embeddings)."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 1024
    seed: int = 0


def recipe_hash(recipe: TinyLlamaRecipe) -> str:
    """Short stable hash of a recipe and the build version (names the cache directory)."""
    payload = json.dumps({"version": TINY_LLAMA_RECIPE_VERSION, **dataclasses.asdict(recipe)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:10]


def _train_tokenizer(recipe: TinyLlamaRecipe):
    """ByteLevel BPE on the demo corpus, wrapped for transformers (adds <s> in front)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=_UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    bos_id = tok.token_to_id(_BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{_BOS} $A", pair=f"{_BOS} $A $B:1", special_tokens=[(_BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=_BOS, eos_token=_EOS, pad_token=_PAD, unk_token=_UNK,
        model_max_length=recipe.max_position_embeddings,
    )


def _build_into(tmp_dir: Path, recipe: TinyLlamaRecipe) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(recipe)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_key_value_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp_dir, safe_serialization=True)
    tokenizer.save_pretrained(tmp_dir)
    (tmp_dir / "labscale-recipe.json").write_text(
        json.dumps({"version": TINY_LLAMA_RECIPE_VERSION, **dataclasses.asdict(recipe)},
                   sort_keys=True, indent=2) + "\n",
        encoding="utf-8",
    )


def _build_tmp(out_dir: Path, recipe: TinyLlamaRecipe) -> Path:
    """Build into a fresh temporary directory next to ``out_dir``; return it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _build_into(tmp, recipe)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in _REQUIRED_FILES)


def build_tiny_llama(out_dir: Path, recipe: TinyLlamaRecipe = TinyLlamaRecipe()) -> Path:
    """Build the tiny model + tokenizer into ``out_dir`` (replacing what is there); return it.

    Everything is written to a temporary directory next to ``out_dir`` first and moved into
    place with ``os.replace``, so a crash never leaves a half-built directory at ``out_dir``.
    """
    out_dir = Path(out_dir)
    tmp = _build_tmp(out_dir, recipe)
    old: Path | None = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old)  # `old` is an empty dir, so this rename is allowed
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def ensure_tiny_llama(cache_dir: Path, recipe: TinyLlamaRecipe = TinyLlamaRecipe()) -> Path:
    """Return ``cache_dir / f"tiny-llama-v{VERSION}-{recipe_hash(recipe)}"``, building it if absent.

    Safe when several processes race: each builds into its own temporary directory and
    renames it into place; whoever loses the race (the target already exists) discards its copy.
    """
    target = Path(cache_dir) / f"tiny-llama-v{TINY_LLAMA_RECIPE_VERSION}-{recipe_hash(recipe)}"
    if _is_complete(target):
        return target
    tmp = _build_tmp(target, recipe)
    try:
        os.replace(tmp, target)
    except OSError:
        if not _is_complete(target):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    return target
