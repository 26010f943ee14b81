"""The model's lifecycle in a run: load the base (or the simulation's stand-in), build the PEFT model on it,
save the adapter and check it reloads, merge it into a fresh base, and load the tuned model back from disk.

Stages 4, 6 and 8 call these (`studio_core.stages`); they read and write through the run's `RunContext`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio_core.context import RunContext

SIMULATION_STEPS = {"max_steps": 12, "eval_steps": 4, "save_steps": 4}


def simulation_training(cfg):
    """A simulation proves the loop (steps, evals, checkpoints, early stopping), not the model: cap its length."""
    capped = {k: min(getattr(cfg.training, k), v) for k, v in SIMULATION_STEPS.items()}
    capped["save_steps"] = capped["eval_steps"] * max(1, capped["save_steps"] // capped["eval_steps"])
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=capped)})


def load_training_model(ctx: RunContext, precision: str):
    """The model later stages train: the real weights, or the simulation's tiny stand-in."""
    from studio_core.models.resolve import load_model, load_simulation_model
    from studio_core.methods import get_method
    from studio_core.train.precision import base_dtype

    model = ctx.resolved_model()
    if ctx.simulated:
        return load_simulation_model(model, len(ctx.tokenizer()))
    return load_model(model, quantize_4bit=get_method(ctx.config.method.name).loads_in_4bit, compute_dtype=precision,
                      dtype=base_dtype(ctx.config, precision))



def build_peft_model(ctx: RunContext, model):
    """The configured method on `model` (targets per method and architecture when 'auto'); returns it and them."""
    from studio_core.models.targets import default_target_modules
    from studio_core.methods import BuildContext
    from studio_core.train.adapters import apply_method

    section = ctx.config.method
    targets = getattr(section, "target_modules", [])
    if targets == "auto":
        targets = default_target_modules(model, section.name)
    max_steps = (simulation_training(ctx.config) if ctx.simulated else ctx.config).training.max_steps
    context = BuildContext(max_steps=max_steps, model_dir=str(ctx.resolved_model().path), loftq=not ctx.simulated)
    if getattr(section, "init", "") == "loftq" and ctx.simulated:
        ctx.emit("simulation", "simulation: the stand-in model is not 4-bit, so loftq initialisation is skipped")
    return apply_method(model, section, targets, context), targets



def training_backend(ctx: RunContext, precision: str):
    """unsloth for LoRA/QLoRA on a CUDA GPU where it is installed, else transformers+peft; with the reason."""
    from studio_core.train.backends import STANDARD, BackendChoice, choose_backend

    cfg = ctx.config
    if ctx.simulated:
        return BackendChoice(STANDARD, f"a simulation trains its tiny stand-in on {STANDARD}")
    if cfg.pruning.enabled:
        return BackendChoice(STANDARD, f"pruning masks the adapter's update in peft's layers; using {STANDARD}")
    init = getattr(cfg.method, "init", "default")
    if init != "default" and cfg.training.backend != "unsloth":
        return BackendChoice(STANDARD, f"init={init} is peft's; using {STANDARD}")
    return choose_backend(cfg.method.name, cfg.training.backend, precision=precision)



def build_with_unsloth(ctx: RunContext, precision: str):
    """LoRA/QLoRA through unsloth's FastLanguageModel (fused kernels); the rest of the run is unchanged."""
    from studio_core.models.targets import ARCHITECTURE_TARGETS
    from studio_core.train.backends import load_with_unsloth
    from studio_core.methods import get_method

    cfg, model = ctx.config, ctx.resolved_model()
    targets = cfg.method.target_modules
    if targets == "auto":
        targets = ARCHITECTURE_TARGETS.get(model.model_type) or ["q_proj", "k_proj", "v_proj", "o_proj"]
    peft_model, _ = load_with_unsloth(
        model.path, load_in_4bit=get_method(cfg.method.name).loads_in_4bit, max_seq_length=cfg.data.max_length,
        dtype=precision, r=cfg.method.r, alpha=cfg.method.alpha, dropout=cfg.method.dropout, target_modules=targets,
        seed=cfg.training.seed, gradient_checkpointing=cfg.training.gradient_checkpointing,
    )
    return peft_model, targets



def save_and_merge(ctx: RunContext) -> None:
    from studio_core.train.batching import collate
    from studio_core.train.merge import merge_adapter, save_adapter
    from studio_core.methods import get_method
    from studio_core.sparsity import run as sparsity
    from studio_core.train.adapters import rewrites_base

    base_record = ctx.resolved_model().record()
    if ctx.simulated:
        base_record = {**base_record, "simulation_base": "artifacts/simulation-base"}
    adapter_dir = ctx.artifact_dir("adapter")
    converted = rewrites_base(ctx.config.method)
    save_adapter(ctx.outputs["peft_model"], adapter_dir, base_record,
                 initial_adapter=ctx.run.artifacts / "adapter-init" if converted else None)
    sparsity.pin_adapter(ctx, adapter_dir)
    batch = collate(ctx.prepared_data().val_tokens[:2], ctx.tokenizer().pad_token_id)
    method = get_method(ctx.config.method.name)
    if not method.loads_in_4bit:  # a 4-bit base reloads de-quantized: the merge check below covers QLoRA
        check_reload(ctx, adapter_dir, batch, swap=converted)
    if not method.mergeable:
        reason = (f"{method.title} adds trained virtual tokens instead of changing weights: there is nothing to "
                  "merge, so the adapter ships alone (load it with peft's PeftModel on the base)")
        ctx.write_artifact("merge.json", {"merged": False, "reason": reason,
                                          "reload_check": ctx.outputs["reload_check"]})
        ctx.emit("merged", f"not merged: {reason}")
        return
    merged_dir = ctx.artifact_dir("merged")
    report = merge_adapter(lambda: fresh_base(ctx), adapter_dir, merged_dir, ctx.tokenizer(), batch,
                           prepare=lambda model: sparsity.prepare_adapter(ctx, model))
    if sparsity.enabled(ctx):  # the merged model is the deliverable: exactly 2:4, also stored compressed
        sparsity.write_compressed(ctx, sparsity.check_merged(ctx, merged_dir))
        report["sparsity"] = "2:4 verified on every pruned tensor (artifacts/pruning.json)"
    report["into"] = merge_base_description(ctx)
    report["merged"] = True
    if "reload_check" in ctx.outputs:
        report["reload_check"] = ctx.outputs["reload_check"]
    ctx.write_artifact("merge.json", report)
    ctx.emit("merged", f"adapter merged; logits relative error {report['relative_error']:.2e} ({report['into']})")



def check_reload(ctx: RunContext, adapter_dir: Path, batch: dict, swap: bool) -> None:
    """The saved adapter, loaded by stock peft on a fresh base, must compute what the trained model computes.

    PiSSA/OLoRA (`swap`): the trained model's base holds residual weights, so its `disable_adapter()` is not the
    base model; the converted adapter on the original base is the same function with the true base behind it,
    and it replaces the trained model for evaluation.
    """
    import torch
    from peft import PeftModel

    from studio_core.errors import StudioError
    from studio_core.sparsity import run as sparsity
    from studio_core.train.merge import MERGE_TOLERANCE, relative_error
    from studio_core.train.precision import autocast, base_dtype

    trained = ctx.outputs["peft_model"].eval()
    device, dtype = next(trained.parameters()).device, trained.get_base_model().dtype
    # Loaded in the dtype training held it in: a model cast with .to(bf16) also rounds the fp32 buffers a bf16
    # load keeps (Llama's rotary inv_freq), 3e-3 of the logits on the tiny model.
    base = fresh_base(ctx, base_dtype(ctx.config, ctx.outputs["precision"]))
    if base.dtype != dtype:  # unsloth's own bf16 load
        base = base.to(dtype=dtype)
    reloaded = PeftModel.from_pretrained(base.to(device=device), str(adapter_dir)).eval()
    sparsity.prepare_adapter(ctx, reloaded)  # pruning: the masked update on the pruned base, not stock peft's
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    # Both at the run's compute precision: the Trainer left the trained model's forward under bf16/fp16 autocast.
    # Except PiSSA/OLoRA: W_res + BA against W + B'A' is the same function in fp32, rounded differently under
    # bf16 (6e-3 apart): so fp32, past the Trainer's autocast wrapper (accelerate keeps `_original_forward`).
    precision = "fp32" if swap else ctx.outputs["precision"]
    forward = trained.__dict__.get("_original_forward", trained) if swap else trained
    with torch.no_grad(), autocast(precision, device.type):
        error = relative_error(forward(**inputs).logits.float(), reloaded(**inputs).logits.float())
    what = "trained model vs its saved adapter " + ("converted onto the original base" if swap else "reloaded")
    ctx.outputs["reload_check"] = {"relative_error": error, "tolerance": MERGE_TOLERANCE, "what": what,
                                   "precision": precision}
    if ctx.outputs.get("backend") == "unsloth":  # its fused kernels round differently from stock peft's
        ctx.outputs["reload_check"]["enforced"] = False
    elif error > MERGE_TOLERANCE:
        raise StudioError(f"the saved adapter does not reproduce the trained model: {what}, relative error "
                          f"{error:.2e} > {MERGE_TOLERANCE:.0e}")
    if swap:
        ctx.outputs["peft_model"] = reloaded



def fresh_base(ctx: RunContext, dtype: str = "fp32"):
    """The base to merge into, in fp32: QLoRA's is its 4-bit base de-quantized (what the adapter trained on).
    `dtype` bf16 loads a plain base in bf16 (the reload check of a run whose base trained in bf16).

    With pruning, the run's masks are applied first (to the 4-bit layers before de-quantizing, as in training)."""
    from studio_core.models.resolve import load_model
    from studio_core.methods import get_method
    from studio_core.sparsity import run as sparsity

    if ctx.simulated:
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(ctx.run.artifacts / "simulation-base", use_safetensors=True)
        sparsity.prepare_base(ctx, base)
        return base
    if get_method(ctx.config.method.name).loads_in_4bit:
        base = load_model(ctx.resolved_model(), quantize_4bit=True, compute_dtype="fp32")
        sparsity.prepare_base(ctx, base)
        return base.dequantize()
    base = load_model(ctx.resolved_model(), dtype=dtype)
    sparsity.prepare_base(ctx, base)
    return base



def merge_base_description(ctx: RunContext) -> str:
    from studio_core.methods import get_method

    if ctx.simulated:
        return "the simulation's tiny random base (fp32)"
    if get_method(ctx.config.method.name).loads_in_4bit:
        return "the nf4 base de-quantized to fp32 (QLoRA trained against those weights, not the originals)"
    return "the fp32 base weights"



def trained_model(ctx: RunContext):
    """The tuned model for the stages after training: cached, else the saved adapter on a fresh base.

    The saved adapter is what ships and what the reload check proved equal to the trained model, so evaluating
    it after a resume measures the same function the run trained.
    """
    if "peft_model" not in ctx.outputs:
        from peft import PeftModel

        from studio_core.models.resolve import load_model
        from studio_core.methods import get_method
        from studio_core.train.precision import base_dtype

        adapter = ctx.run.artifacts / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            from studio_core.errors import StudioError

            raise StudioError(f"no adapter in {adapter}: step 6 (Training Exec) has not completed in this run")
        precision = ctx.precision()
        if ctx.simulated:
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(ctx.run.artifacts / "simulation-base", use_safetensors=True)
        else:
            base = load_model(ctx.resolved_model(), quantize_4bit=get_method(ctx.config.method.name).loads_in_4bit,
                              compute_dtype=precision, dtype=base_dtype(ctx.config, precision))  # as it trained
        from studio_core.sparsity import run as sparsity

        sparsity.prepare_base(ctx, base)
        ctx.outputs["peft_model"] = PeftModel.from_pretrained(base, str(adapter)).eval()
        sparsity.prepare_adapter(ctx, ctx.outputs["peft_model"])
    return ctx.outputs["peft_model"]
