"""Which modules a PEFT method adapts: per-architecture defaults, else every linear layer."""

from __future__ import annotations

from collections import defaultdict

# Attention and MLP projections by model_type; names as they appear in the modules' dotted paths.
ARCHITECTURE_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
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


def default_target_modules(model) -> list[str]:
    """The architecture's projections where known and present, else every linear layer."""
    present = set(linear_module_names(model))
    known = ARCHITECTURE_TARGETS.get(getattr(model.config, "model_type", ""), [])
    chosen = [name for name in known if name in present]
    return chosen or sorted(present)


def module_names_by_type(model) -> dict[str, list[str]]:
    """Module leaf names grouped by class name: what 'target modules not found' shows the user."""
    groups: dict[str, set[str]] = defaultdict(set)
    for path, module in model.named_modules():
        if path and not list(module.children()):
            groups[type(module).__name__].add(path.rsplit(".", 1)[-1])
    return {kind: sorted(names) for kind, names in sorted(groups.items())}


def missing_targets(model, targets: list[str]) -> list[str]:
    """Requested target names that match no module in the model."""
    leaves = {path.rsplit(".", 1)[-1] for path, _ in model.named_modules() if path}
    return [t for t in targets if t not in leaves]
