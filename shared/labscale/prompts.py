"""Prompt styles per model family, and how a task example becomes a zero-/k-shot/CoT prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labscale.errors import BadInputError

Turn = tuple[str, str]
"""(user message, assistant answer) of one demonstration."""

COT_SUFFIX = "Think step by step, then give the final answer on a last line starting with 'Answer:'."


def _plain(system: str, shots: Sequence[Turn], query: str) -> str:
    parts = [f"### Instruction:\n{system}\n\n"]
    parts += [f"### Input:\n{user}\n\n### Response:\n{answer}\n\n" for user, answer in shots]
    parts.append(f"### Input:\n{query}\n\n### Response:\n")
    return "".join(parts)


def _llama2(system: str, shots: Sequence[Turn], query: str) -> str:
    turns = [*shots, (query, "")]
    out = ""
    for i, (user, answer) in enumerate(turns):
        head = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if i == 0 else ""
        out += ("" if i == 0 else "<s>") + f"[INST] {head}{user} [/INST]"
        out += f" {answer} </s>" if i < len(shots) else ""
    return out


def _mistral(system: str, shots: Sequence[Turn], query: str) -> str:
    out = ""
    for i, (user, answer) in enumerate([*shots, (query, "")]):
        user = f"{system}\n\n{user}" if i == 0 else user
        out += f"[INST] {user} [/INST]" + (f" {answer}</s>" if i < len(shots) else "")
    return out


def _chatml(system: str, shots: Sequence[Turn], query: str) -> str:
    out = f"<|im_start|>system\n{system}<|im_end|>\n"
    for user, answer in shots:
        out += f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
    return out + f"<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"


def _falcon(system: str, shots: Sequence[Turn], query: str) -> str:
    out = f"{system}\n\n"
    out += "".join(f"User: {user}\nAssistant: {answer}\n\n" for user, answer in shots)
    return out + f"User: {query}\nAssistant:"


def _phi3(system: str, shots: Sequence[Turn], query: str) -> str:
    out = f"<|system|>\n{system}<|end|>\n"
    for user, answer in shots:
        out += f"<|user|>\n{user}<|end|>\n<|assistant|>\n{answer}<|end|>\n"
    return out + f"<|user|>\n{query}<|end|>\n<|assistant|>\n"


FAMILIES: dict[str, Callable[[str, Sequence[Turn], str], str]] = {
    "plain": _plain,
    "llama2": _llama2,
    "mistral": _mistral,
    "chatml": _chatml,
    "falcon": _falcon,
    "phi3": _phi3,
}
"""Model family → prompt renderer. BOS tokens are left to the tokenizer."""


CHAT_TEMPLATE = "chat-template"
"""The family that uses the model tokenizer's own chat template instead of a preset."""
FAMILY_NAMES: tuple[str, ...] = (*FAMILIES, CHAT_TEMPLATE)


def prompt_renderer(family: str, instruction: str, shots: Sequence[Turn] = (), cot: bool = False,
                    tokenizer: Any = None) -> Callable[[str], str]:
    """query → the full prompt: a family preset, or with `chat-template` the tokenizer's chat template
    (system instruction, demonstrations as turns, the query, then the opened assistant turn)."""
    if family != CHAT_TEMPLATE:
        return lambda query: render_prompt(family, instruction, query, shots, cot)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise BadInputError("family chat-template: the model's tokenizer has no chat template — fix: set the "
                            f"model's family to one of {', '.join(FAMILIES)}")
    return lambda query: tokenizer.apply_chat_template(chat_messages(instruction, query, shots, cot), tokenize=False,
                                                       add_generation_prompt=True)


def render_prompt(family: str, instruction: str, query: str, shots: Sequence[Turn] = (), cot: bool = False) -> str:
    """The full prompt for one item: instruction, optional demonstrations, the query."""
    system = f"{instruction} {COT_SUFFIX}" if cot else instruction
    return FAMILIES[family](system, shots, query)


def chat_messages(instruction: str, query: str, shots: Sequence[Turn] = (), cot: bool = False) -> list[dict[str, str]]:
    """The same item as chat messages for an API model: system, demonstrations as turns, the query."""
    system = f"{instruction} {COT_SUFFIX}" if cot else instruction
    messages = [{"role": "system", "content": system}]
    for user, answer in shots:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return [*messages, {"role": "user", "content": query}]
