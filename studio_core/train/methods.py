"""The PEFT method registry: every method the studio trains, through the `peft` library.

A method's parameters (with defaults and descriptions, from which the UI builds its form) are its class in
`studio_core.config` (`method_section(id)`); its entry here says how those become a peft config, which layer
types it can wrap, whether it can be merged into the base, whether it works on a 4-bit base, and what it
promises. QLoRA is LoRA on a 4-bit base: the difference is in how the base loads (`loads_in_4bit`). PiSSA and
OLoRA start by rewriting the base weights (base minus the adapter's initial product); their adapter is saved
converted to a plain LoRA of rank 2r against the original base, so it loads on the untouched base model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_core.config import METHOD_IDS, NOT_MERGEABLE
from studio_core.errors import ConfigError, Problem

LINEAR = ("Linear",)
LINEAR_CONV1D = ("Linear", "Conv1D")  # GPT-2 style transposed linear layers
LINEAR_4BIT = ("Linear4bit",)
FEEDFORWARD_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "c_fc", "mlp.c_proj", "fc1", "fc2",
                     "dense_h_to_4h", "dense_4h_to_h", "wi", "wo", "w1", "w2", "w3", "output.dense")


@dataclass(frozen=True)
class BuildContext:
    """What a peft config needs beyond the method section: the run's steps and the base model's folder."""

    max_steps: int = 40
    model_dir: str | None = None  # tokenizer (prompt init text) and, for loftq, the original weights
    feedforward: tuple[str, ...] = ()
    loftq: bool = True  # False on a stand-in that is not 4-bit (simulation): loftq init is skipped


@dataclass(frozen=True)
class Method:
    id: str
    title: str
    summary: str  # one line for the method table: what it trains
    build: Callable[[Any, list[str], BuildContext], object]  # (method section, targets, context) -> peft config
    layer_types: tuple[str, ...] = LINEAR_CONV1D + LINEAR_4BIT  # module classes it can wrap
    loads_in_4bit: bool = False
    mergeable: bool = True
    quantized_base: bool = True  # works on a base already in 4-bit
    under_1_percent: bool = False  # trains under 1% of a real-size model's parameters at its defaults
    rewrites_base: bool = False  # initialisation changes the base weights (saved converted; see module doc)
    targeted: bool = True  # adapts named modules (prefix/prompt add virtual tokens instead)
    notes: tuple[str, ...] = field(default_factory=tuple)


def _task_type():
    from peft import TaskType

    return TaskType.CAUSAL_LM


def _lora(m, targets, ctx: BuildContext):
    from peft import LoraConfig

    init = {"default": True, "gaussian": "gaussian", "olora": "olora", "loftq": True}[m.init]  # loftq: after load
    return LoraConfig(r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout, target_modules=targets, bias="none",
                      use_dora=m.name == "dora", use_rslora=m.name == "rslora", init_lora_weights=init,
                      task_type=_task_type())


def _pissa(m, targets, ctx: BuildContext):
    from peft import LoraConfig

    init = f"pissa_niter_{m.svd_iterations}" if m.svd_iterations else "pissa"
    return LoraConfig(r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout, target_modules=targets, bias="none",
                      init_lora_weights=init, task_type=_task_type())


def _adalora(m, targets, ctx: BuildContext):
    from peft import AdaLoraConfig

    steps = ctx.max_steps
    return AdaLoraConfig(init_r=m.init_r, target_r=m.target_r, lora_alpha=m.alpha, lora_dropout=m.dropout,
                         target_modules=targets, tinit=int(steps * m.warmup_fraction),
                         tfinal=int(steps * m.final_fraction), deltaT=m.update_every, total_step=steps,
                         orth_reg_weight=m.orth_reg_weight, task_type=_task_type())


def _ia3(m, targets, ctx: BuildContext):
    from peft import IA3Config

    ff = list(ctx.feedforward) if m.feedforward_modules == "auto" else m.feedforward_modules
    return IA3Config(target_modules=targets, feedforward_modules=ff, task_type=_task_type())


def _loha(m, targets, ctx: BuildContext):
    from peft import LoHaConfig

    return LoHaConfig(r=m.r, alpha=m.alpha, rank_dropout=m.rank_dropout, module_dropout=m.module_dropout,
                      target_modules=targets, task_type=_task_type())


def _lokr(m, targets, ctx: BuildContext):
    from peft import LoKrConfig

    return LoKrConfig(r=m.r, alpha=m.alpha, decompose_factor=m.decompose_factor, rank_dropout=m.rank_dropout,
                      module_dropout=m.module_dropout, target_modules=targets, task_type=_task_type())


def _oft(m, targets, ctx: BuildContext):
    from peft import OFTConfig

    return OFTConfig(r=0, oft_block_size=m.block_size, module_dropout=m.module_dropout, coft=m.constrained,
                     eps=m.eps, block_share=m.block_share, target_modules=targets, task_type=_task_type())


def _boft(m, targets, ctx: BuildContext):
    from peft import BOFTConfig

    return BOFTConfig(boft_block_size=m.block_size, boft_n_butterfly_factor=m.butterfly_factor,
                      boft_dropout=m.dropout, target_modules=targets, task_type=_task_type())


def _vera(m, targets, ctx: BuildContext):
    from peft import VeraConfig

    return VeraConfig(r=m.r, vera_dropout=m.dropout, d_initial=m.d_initial, target_modules=targets,
                      save_projection=True, task_type=_task_type())


def _prefix(m, targets, ctx: BuildContext):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(num_virtual_tokens=m.virtual_tokens, prefix_projection=m.projection,
                              encoder_hidden_size=m.projection_hidden, task_type=_task_type())


def _prompt(m, targets, ctx: BuildContext):
    from peft import PromptTuningConfig, PromptTuningInit

    if m.init == "text":
        return PromptTuningConfig(num_virtual_tokens=m.virtual_tokens, prompt_tuning_init=PromptTuningInit.TEXT,
                                  prompt_tuning_init_text=m.init_text, tokenizer_name_or_path=ctx.model_dir,
                                  task_type=_task_type())
    return PromptTuningConfig(num_virtual_tokens=m.virtual_tokens, task_type=_task_type())


_LORA_NOTE = "Trains B @ A beside each target weight; merges exactly."
METHODS: dict[str, Method] = {m.id: m for m in (
    Method("lora", "LoRA", "low-rank update B @ A on each target weight", _lora, notes=(_LORA_NOTE,)),
    Method("qlora", "QLoRA", "LoRA on the base loaded in 4-bit NF4 (about a seventh of the weight memory)", _lora,
           loads_in_4bit=True, notes=("Merges into the NF4 base de-quantized to fp32: the weights it trained on.",)),
    Method("dora", "DoRA", "LoRA on the direction plus a trained magnitude per output (weight-decomposed)", _lora),
    Method("rslora", "rsLoRA", "LoRA scaled by alpha / sqrt(r), which keeps high ranks stable", _lora),
    Method("pissa", "PiSSA", "LoRA initialised from the principal singular vectors of each weight", _pissa,
           layer_types=LINEAR_CONV1D, quantized_base=False, rewrites_base=True),
    Method("adalora", "AdaLoRA", "SVD-form LoRA whose rank budget is pruned to where it matters during training",
           _adalora),
    Method("ia3", "IA3", "learned scaling vectors on keys, values and feed-forward activations", _ia3,
           under_1_percent=True),
    Method("loha", "LoHa", "Hadamard product of two low-rank updates (LyCORIS)", _loha, layer_types=LINEAR,
           quantized_base=False),
    Method("lokr", "LoKr", "Kronecker product of a small and a low-rank factor (LyCORIS)", _lokr, layer_types=LINEAR,
           quantized_base=False),
    Method("oft", "OFT", "block-diagonal orthogonal rotation of each weight's input", _oft,
           layer_types=LINEAR + LINEAR_4BIT),
    Method("boft", "BOFT", "orthogonal rotation factored into butterfly blocks", _boft, layer_types=LINEAR,
           quantized_base=False),
    Method("vera", "VeRA", "shared frozen random low-rank matrices with two trained scaling vectors per module",
           _vera, under_1_percent=True),
    Method("prefix", "Prefix tuning", "trained key/value prefixes at every layer; the base is untouched", _prefix,
           under_1_percent=True, targeted=False),
    Method("prompt", "Prompt tuning", "trained soft-prompt embeddings prepended to the input", _prompt,
           under_1_percent=True, targeted=False),
)}
for _id in NOT_MERGEABLE:  # one list, in config.py, which refuses export for them (config cannot import this module)
    METHODS[_id] = dataclasses.replace(METHODS[_id], mergeable=False)
assert tuple(METHODS) == METHOD_IDS, "the registry and the config's method ids must list the same methods"


def get_method(name: str) -> Method:
    return METHODS[name]


def method_table() -> list[dict[str, Any]]:
    """One row per method: what the studio's method table and `peft-studio methods` show."""
    return [{"id": m.id, "method": m.title, "what it trains": m.summary, "mergeable": m.mergeable,
             "4-bit base": "loads it" if m.loads_in_4bit else ("yes" if m.quantized_base else "no"),
             "layers": "virtual tokens" if not m.targeted else ", ".join(m.layer_types)} for m in METHODS.values()]


def feedforward_modules(targets: list[str]) -> tuple[str, ...]:
    """IA3's feed-forward modules among `targets` (scaled on their input): the MLP projections by name."""
    return tuple(t for t in targets if t in FEEDFORWARD_NAMES)


def fit_problems(model, section, targets: list[str]) -> list[Problem]:
    """What stops `section`'s method from wrapping `targets` of this model, in peft's terms, with the fix."""
    from studio_core.models.targets import matching_modules

    method = get_method(section.name)
    if not method.targeted:
        return []
    problems: list[Problem] = []
    modules = matching_modules(model, targets)
    wrong = sorted({f"{path.rsplit('.', 1)[-1]} ({type(mod).__name__})" for path, mod in modules
                    if type(mod).__name__ not in method.layer_types})
    if wrong:
        alternatives = ", ".join(m.id for m in METHODS.values() if m.targeted and
                                 all(type(mod).__name__ in m.layer_types for _, mod in modules))
        problems.append(Problem("method.name", f"{method.title} can only wrap {', '.join(method.layer_types)} "
                                f"layers; {', '.join(wrong)} are not. Use {alternatives or 'another method'}, or "
                                "set method.target_modules to linear layers only"))
    if getattr(section, "init", "") == "olora" and any(type(mod).__name__ == "Conv1D" for _, mod in modules):
        problems.append(Problem("method.init", "olora cannot factor GPT-2 style Conv1D weights (stored "
                                "transposed); use init=default"))
    if section.name in ("oft", "boft"):
        bad = sorted({f"{path.rsplit('.', 1)[-1]} ({_in_features(mod)})" for path, mod in modules
                      if _in_features(mod) % section.block_size})
        if bad:
            problems.append(Problem("method.block_size", f"{section.block_size} does not divide the input features "
                                    f"of {', '.join(bad)}; choose a block size that divides them all"))
    if section.name == "boft" and not problems:
        problems += _boft_butterfly_problems(section, modules)
    if getattr(model, "is_loaded_in_4bit", False) and not method.quantized_base and not method.loads_in_4bit:
        problems.append(Problem("method.name", f"{method.title} cannot train on a 4-bit base; load the base in "
                                "full precision or use qlora, oft, ia3, vera or adalora"))
    return problems


def _in_features(module) -> int:
    if type(module).__name__ == "Conv1D":
        return module.weight.shape[0]
    return getattr(module, "in_features", 0)


def _boft_butterfly_problems(section, modules) -> list[Problem]:
    # peft: block_num = in_features / block_size must be divisible by 2^(butterfly_factor - 1)
    factor = 2 ** (section.butterfly_factor - 1)
    bad = sorted({f"{path.rsplit('.', 1)[-1]} ({_in_features(mod)})" for path, mod in modules
                  if (_in_features(mod) // section.block_size) % factor})
    if not bad:
        return []
    return [Problem("method.butterfly_factor", f"{section.butterfly_factor} needs in_features / block_size "
                    f"divisible by {factor} for {', '.join(bad)}; lower butterfly_factor or block_size")]


def check_fits(model, section, targets: list[str]) -> None:
    problems = fit_problems(model, section, targets)
    if problems:
        raise ConfigError(problems)


def apply_method(model, section, targets: list[str], context: BuildContext | None = None):
    """Wrap `model` with the configured adapter; only the adapter's parameters stay trainable."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    method = get_method(section.name)
    context = context or BuildContext()
    if method.targeted:
        check_fits(model, section, targets)
    if section.name == "ia3" and not context.feedforward:
        from studio_core.models.targets import default_feedforward_modules

        ff = default_feedforward_modules(model, targets) or feedforward_modules(targets)
        context = dataclasses.replace(context, feedforward=tuple(ff))
    if method.loads_in_4bit:
        keep_4bit_layers_trainable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_model = get_peft_model(model, method.build(section, targets, context))
    if getattr(section, "init", "") == "loftq" and context.loftq:
        _loftq_init(peft_model, context)
    return peft_model


def _loftq_init(peft_model, context: BuildContext) -> None:
    """LoftQ for QLoRA: set each adapter so that the 4-bit weight plus B @ A approximates the original weight."""
    import torch
    from peft import replace_lora_weights_loftq

    if not torch.cuda.is_available():  # peft quantizes each weight on the GPU to measure the error
        raise ConfigError(Problem("method.init", "loftq initialisation needs a CUDA GPU (peft's "
                                  "replace_lora_weights_loftq); none is visible, so use init=default here"))
    if not context.model_dir:
        raise ConfigError(Problem("method.init", "loftq needs the base model's safetensors folder"))
    files = sorted(Path(context.model_dir).glob("*.safetensors"))
    if len(files) != 1:
        raise ConfigError(Problem("method.init", f"loftq reads one safetensors file; {context.model_dir} has "
                                  f"{len(files)}; use init=default"))
    replace_lora_weights_loftq(peft_model, model_path=str(files[0]))


def rewrites_base(section) -> bool:
    """PiSSA (and LoRA with olora init) change the base weights at init: their adapter is saved converted."""
    return get_method(section.name).rewrites_base or getattr(section, "init", "") == "olora"


def save_initial_adapter(peft_model, folder: Path) -> None:
    """The adapter as initialised: what converts a PiSSA/OLoRA adapter back onto the original base."""
    peft_model.save_pretrained(str(folder), safe_serialization=True)


def training_callbacks(section) -> list:
    """Per-method hooks into the training loop: AdaLoRA reallocates its rank budget after each optimizer step,
    while the gradients are still there (the Trainer zeroes them after `on_optimizer_step`)."""
    if section.name != "adalora":
        return []
    from transformers import TrainerCallback

    class AdaLoraBudget(TrainerCallback):
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            model.base_model.update_and_allocate(state.global_step)

    return [AdaLoraBudget()]


def keep_4bit_layers_trainable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference during evaluation.

    On CPUs with AVX-512 BF16, bitsandbytes (0.50) repacks a Linear4bit's weight at its first eval-mode forward
    and never unpacks it for training: every later training forward then runs `gemv_4bit`, which has no autograd
    kernel, and gradients flowing through the frozen 4-bit layers are silently wrong. Evaluation inside a training
    run (the step-0 baseline, periodic evals) would trigger it, so the repacking is switched off for models we
    train; tests/train/test_training.py checks that gradients after an evaluation equal those without one.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count as their logical size."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
