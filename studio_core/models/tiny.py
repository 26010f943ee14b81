"""Tiny random models (2 layers, hidden 64) for tests and simulation, and a byte-level tokenizer for them.

`tiny-random:<family>` builds one from scratch with a fixed seed; simulation shrinks the real model's
config instead, so the tiny model keeps the real module names and vocabulary.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from studio_core.errors import ModelError

TINY_FAMILIES = ("llama", "mistral", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox")
TINY_SIZE = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def shrink_config(config, vocab_size: int | None = None):
    """A copy of `config` at tiny size: same model type and module names, 2 layers, hidden 64."""
    tiny = config.__class__.from_dict(config.to_dict())
    for key, value in TINY_SIZE.items():
        setattr(tiny, key, value)  # attribute_map translates e.g. GPT-2's n_layer / n_embd
    if getattr(tiny, "layer_types", None):  # per-layer attention kinds (e.g. qwen2): one per remaining layer
        tiny.layer_types = list(tiny.layer_types)[: TINY_SIZE["num_hidden_layers"]]
    if getattr(tiny, "model_type", "") == "gpt2":
        tiny.n_inner = TINY_SIZE["intermediate_size"]
    if hasattr(tiny, "num_key_value_heads"):
        tiny.num_key_value_heads = 2
    if hasattr(tiny, "head_dim"):
        tiny.head_dim = TINY_SIZE["hidden_size"] // TINY_SIZE["num_attention_heads"]
    for key in ("max_position_embeddings", "n_positions"):
        if hasattr(tiny, key):
            setattr(tiny, key, min(getattr(tiny, key) or 2048, 2048))
    if vocab_size is not None:
        tiny.vocab_size = vocab_size
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # e.g. phi3's pad 32000: outside the vocab
            if isinstance(getattr(tiny, key, None), int) and getattr(tiny, key) >= vocab_size:
                setattr(tiny, key, None)
    tiny.quantization_config = None
    return tiny


def build_byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + ChatML specials): any text, no download, deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _family_config(family: str, vocab_size: int):
    from transformers import AutoConfig

    config = AutoConfig.for_model(family)
    config = shrink_config(config, vocab_size)
    config.architectures = None
    config.tie_word_embeddings = False
    return config


def ensure_tiny_random(family: str, cache: Path) -> Path:
    """A saved tiny random model of `family` (seeded, so its digest is stable), built on first use."""
    if family not in TINY_FAMILIES:
        raise ModelError(
            f"model.ref: unknown tiny-random family '{family}'; choose one of: "
            + ", ".join(f"tiny-random:{f}" for f in TINY_FAMILIES)
        )
    final = cache / "tiny-random" / family
    if (final / "config.json").is_file():
        return final
    staging = final.parent / f".{family}.partial-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        tokenizer = build_byte_tokenizer()
        model = build_random_model(_family_config(family, len(tokenizer)))
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "config.json").is_file():  # lost a race to an identical build: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def build_random_model(config, seed: int = 0):
    """A randomly initialised causal LM from `config`, deterministic for a given seed."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
