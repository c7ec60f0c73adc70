"""Fitting prompts to the context: a long input is cut at its end; instruction and answer slot stay."""

from __future__ import annotations

import pytest

from labscale.errors import BadInputError
from labscale.models.loading import load_tokenizer
from labscale.models.prompt_fit import fit_prompt, fit_prompts, token_count
from labscale.prompts import render_prompt


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer({"path": "tiny-llama", "build": "tiny-llama"})


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
