"""Which modules a PEFT method adapts: per-architecture defaults, else every linear layer."""

from __future__ import annotations

from collections import defaultdict

# Attention and MLP projections by model_type; a name matches a module whose dotted path ends with it (peft's rule).
_LLAMA_STYLE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ARCHITECTURE_TARGETS = {
    **dict.fromkeys(("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"),
                    _LLAMA_STYLE),
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "t5": ["q", "v"],
}
# IA3 scales keys, values and the feed-forward output projection (peft's per-architecture choice).
IA3_TARGETS = {
    **dict.fromkeys(("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"),
                    (["k_proj", "v_proj", "down_proj"], ["down_proj"])),
    "phi": (["k_proj", "v_proj", "fc2"], ["fc2"]),
    "phi3": (["qkv_proj", "down_proj"], ["down_proj"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "gpt_neox": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
    "t5": (["k", "v", "wo"], ["wo"]),
}
EXCLUDED = ("lm_head", "embed_out", "score")


def linear_module_names(model) -> list[str]:
    """Leaf names of the linear layers an adapter can wrap (nn.Linear, GPT-2's Conv1D, 4-bit Linear)."""
    names = set()
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if _is_linear(module) and leaf not in EXCLUDED:
            names.add(leaf)
    return sorted(names)


def _is_linear(module) -> bool:
    kind = type(module).__name__
    return kind in ("Linear", "Linear4bit", "Linear8bitLt", "Conv1D")


def default_target_modules(model, method: str = "lora") -> list[str]:
    """The architecture's projections where known and present, else every linear layer (auto-detection)."""
    model_type = getattr(model.config, "model_type", "")
    if method == "ia3" and model_type in IA3_TARGETS:
        targets = IA3_TARGETS[model_type][0]
        if not missing_targets(model, targets):
            return list(targets)
    present = set(linear_module_names(model))
    known = ARCHITECTURE_TARGETS.get(model_type, [])
    chosen = [name for name in known if name in present]
    return chosen or sorted(present)


def default_feedforward_modules(model, targets: list[str]) -> list[str] | None:
    """IA3's feed-forward modules for this architecture when `targets` are its defaults; None if not known."""
    entry = IA3_TARGETS.get(getattr(model.config, "model_type", ""))
    return list(entry[1]) if entry and list(entry[0]) == list(targets) else None


def module_names_by_type(model) -> dict[str, list[str]]:
    """Module leaf names grouped by class name: what 'target modules not found' shows the user."""
    groups: dict[str, set[str]] = defaultdict(set)
    for path, module in model.named_modules():
        if path and not list(module.children()):
            groups[type(module).__name__].add(path.rsplit(".", 1)[-1])
    return {kind: sorted(names) for kind, names in sorted(groups.items())}


def _matches(path: str, target: str) -> bool:
    return path == target or path.endswith("." + target)


def matching_modules(model, targets: list[str]) -> list[tuple[str, object]]:
    """(dotted path, module) of every module a target name selects."""
    return [(path, module) for path, module in model.named_modules()
            if path and any(_matches(path, t) for t in targets)]


def missing_targets(model, targets: list[str]) -> list[str]:
    """Requested target names that match no module in the model."""
    paths = [path for path, _ in model.named_modules() if path]
    return [t for t in targets if not any(_matches(p, t) for p in paths)]
