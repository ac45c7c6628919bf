"""The captioning prompt library: recipes pick a prompt by id, and the id is recorded with every caption."""

from __future__ import annotations

# ShareGPT4V-style dense description (the prompt family LLM2CLIP's dense captions come from), and a short
# one for (short dense, long dense) caption pairs.
PROMPTS: dict[str, str] = {
    "detailed": (
        "Describe this image in detail. Name every object with its colour, size and position, the "
        "relations between the objects, the background, and any text, in a few fluent sentences."
    ),
    "short": "Describe this image in one short sentence.",
}


def prompt_text(prompt_id: str) -> str:
    if prompt_id not in PROMPTS:
        raise KeyError(f"unknown prompt id {prompt_id!r}; the library has {sorted(PROMPTS)}")
    return PROMPTS[prompt_id]


def chat_messages(prompt_id: str) -> list[dict]:
    """One user turn: the image, then the instruction (the order vision-language chat templates expect)."""
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_text(prompt_id)}]}
    ]


def render_prompt(processor_or_tokenizer, prompt_id: str) -> str:
    """The model's own chat template applied once; every image shares the same rendered prompt."""
    return processor_or_tokenizer.apply_chat_template(
        chat_messages(prompt_id), add_generation_prompt=True, tokenize=False
    )
