"""Fitting prompts to the context: a long input is cut at its end; instruction and answer slot stay."""

from __future__ import annotations

import pytest

from labscale.errors import BadInputError
from labscale.models.loading import load_tokenizer
from labscale.models.prompt_fit import fit_prompt, fit_prompts, token_count
from labscale.params import ModelParams
from labscale.prompts import render_prompt


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelParams(path="tiny-llama", build="tiny-llama"))


def render(query: str) -> str:
    return render_prompt("plain", "Summarize the dialogue as a note section.", query,
                         [("Doctor: Any pain?\nPatient: No.", "Denies pain.")])


def test_a_long_input_is_cut_at_its_end_and_the_rest_of_the_prompt_is_kept(tokenizer) -> None:
    long_input = " ".join(f"Patient: my knee hurt on day {i}." for i in range(300))
    prompt, cut = fit_prompt(tokenizer, render, long_input, 200)
    assert cut and token_count(tokenizer, prompt) <= 200
    assert prompt.startswith("### Instruction:\nSummarize the dialogue") and "Denies pain." in prompt
    assert prompt.endswith(" …\n\n### Response:\n")  # the answer slot survives
    assert "my knee hurt on day 0." in prompt and "day 299." not in prompt  # the input's start is kept


def test_short_inputs_are_untouched_and_cuts_are_counted(tokenizer) -> None:
    prompts, cut = fit_prompts(tokenizer, render, ["Patient: fine.", "Patient: " + "ouch " * 500], 150)
    assert prompts[0] == render("Patient: fine.") and cut == 1


def test_a_prompt_that_cannot_fit_is_bad_input(tokenizer) -> None:
    with pytest.raises(BadInputError, match="raise the model's max_length, lower shots"):
        fit_prompt(tokenizer, render, "Patient: a long story " * 50, 10)


def test_chat_template_family_renders_with_the_tokenizers_template(tokenizer) -> None:
    from labscale.prompts import prompt_renderer

    template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    chat = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    chat.chat_template = template
    render = prompt_renderer("chat-template", "Decide.", [("Claim: a", "SUPPORTS")], tokenizer=chat)
    assert render("Claim: b") == ("<|system|>Decide.\n<|user|>Claim: a\n<|assistant|>SUPPORTS\n"
                                  "<|user|>Claim: b\n<|assistant|>")
    with pytest.raises(BadInputError, match="has no chat template"):
        prompt_renderer("chat-template", "Decide.", tokenizer=tokenizer)


def test_min_new_tokens_keeps_generation_going_and_is_checked_against_the_max(tokenizer) -> None:
    from labscale.models.generation import generate_batch
    from labscale.models.loading import load_causal_lm
    from labscale.tasks import TaskDef, get_task

    import torch

    model = load_causal_lm(ModelParams(path="tiny-llama", build="tiny-llama", quantization="none")).eval()
    with torch.no_grad():  # make end-of-sequence the model's favourite next token
        model.get_output_embeddings().weight[tokenizer.eos_token_id] *= 0
        model.get_output_embeddings().weight[tokenizer.eos_token_id] += 10 * model.model.norm.weight.sign()
    prompts = [render("Patient: fine."), render("Patient: cough.")]
    assert [g.tokens_out for g in generate_batch(model, tokenizer, prompts, 6, 512)] == [1, 1]
    assert [g.tokens_out for g in generate_batch(model, tokenizer, prompts, 6, 512, min_new_tokens=4)] == [5, 5]
    with pytest.raises(ValueError, match="min_new_tokens 9 > max_new_tokens 8"):
        TaskDef.model_validate({**get_task("fact-check").model_dump(), "min_new_tokens": 9})
