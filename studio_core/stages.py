"""The stage recipes: each checks its inputs, calls its package, writes its artifacts and emits events.

`workflow.STAGES` lists them in wizard order; the work itself lives in the concern packages (data/,
models/, preflight.py, ...), so these stay short.

What a stage needs from an earlier one it reads through an accessor here (`prepared_data`, `run_precision`,
`trained_model`): from this process's cache when the earlier stage ran in it, else from the run dir, so a
resumed run or another process can start at any stage after Training Exec. Training Init and Training Exec
are the one pair that share a live object (the PEFT model being trained), so they run in one process.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio_core.context import RunContext


def resolved_model(ctx: RunContext):
    """The run's model reference, resolved once (data resolve needs its tokenizer, so it may come first)."""
    from studio_core.models.resolve import resolve_model

    if "model" not in ctx.outputs:
        cfg = ctx.config.model
        ctx.outputs["model"] = resolve_model(cfg.ref, ctx.model_cache, cfg.revision)
    return ctx.outputs["model"]


def tokenizer(ctx: RunContext):
    from studio_core.models.resolve import load_tokenizer

    if "tokenizer" not in ctx.outputs:
        ctx.outputs["tokenizer"] = load_tokenizer(resolved_model(ctx))
    return ctx.outputs["tokenizer"]


def prepared_data(ctx: RunContext):
    """Step 1's result: the normalised splits, their tokens and the report (from the run dir if not cached)."""
    from studio_core.data.prepare import PreparedData
    from studio_core.data.tokenize import TokenizedExample
    from studio_core.runs import read_jsonl

    if "data" not in ctx.outputs:
        folder = ctx.run.artifacts / "data"
        if not (folder / "train.tokens.jsonl").is_file():
            from studio_core.errors import StudioError

            raise StudioError(f"no tokenized data in {folder}: step 1 (Data Resolve) has not completed in this run")
        rows = {s: [r["messages"] for r in read_jsonl(folder / f"{s}.jsonl")] for s in ("train", "val")}
        tokens = {s: [TokenizedExample(**t) for t in read_jsonl(folder / f"{s}.tokens.jsonl")] for s in ("train", "val")}
        ctx.outputs["data"] = PreparedData(rows["train"], rows["val"], tokens["train"], tokens["val"],
                                           ctx.read_artifact("data/report.json"))
    return ctx.outputs["data"]


def run_precision(ctx: RunContext) -> str:
    """The compute precision Training Init chose (bf16, fp16 or fp32)."""
    if "precision" not in ctx.outputs:
        ctx.outputs["precision"] = ctx.read_artifact("training_init.json")["precision"]
    return ctx.outputs["precision"]


def trained_model(ctx: RunContext):
    """The tuned model for the stages after training: cached, else the saved adapter on a fresh base.

    The saved adapter is what ships and what the reload check proved equal to the trained model, so evaluating
    it after a resume measures the same function the run trained.
    """
    if "peft_model" not in ctx.outputs:
        from peft import PeftModel

        from studio_core.models.resolve import load_model
        from studio_core.train.methods import get_method

        adapter = ctx.run.artifacts / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            from studio_core.errors import StudioError

            raise StudioError(f"no adapter in {adapter}: step 6 (Training Exec) has not completed in this run")
        precision = run_precision(ctx)
        if ctx.simulated:
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(ctx.run.artifacts / "simulation-base", use_safetensors=True)
        else:
            base = load_model(resolved_model(ctx), quantize_4bit=get_method(ctx.config.method.name).loads_in_4bit,
                              compute_dtype=precision)
        ctx.outputs["peft_model"] = PeftModel.from_pretrained(base, str(adapter)).eval()
    return ctx.outputs["peft_model"]


def data_resolve(ctx: RunContext) -> None:
    """Step 1: validate every row (before touching any model), split, tokenize, report, digest."""
    from studio_core.data.prepare import prepare_data
    from studio_core.runs import atomic_write_jsonl

    cfg = ctx.config.data
    data = prepare_data(cfg, lambda: tokenizer(ctx), simulate=ctx.simulated)
    out = ctx.artifact_dir("data")
    for split, rows, tokens in (("train", data.train, data.train_tokens), ("val", data.val, data.val_tokens)):
        atomic_write_jsonl(out / f"{split}.jsonl", [{"messages": r} for r in rows])
        atomic_write_jsonl(out / f"{split}.tokens.jsonl", [asdict(t) for t in tokens])
    ctx.write_artifact("data/report.json", data.report)
    ctx.outputs["data"] = data
    rows = data.report["rows"]
    ctx.emit("data_resolved", f"{rows['train']} train / {rows['val']} val rows, digest {data.report['sha256'][:12]}",
             report_path="artifacts/data/report.json")
    _warn_bad_rows(ctx, data.report)


def _warn_bad_rows(ctx: RunContext, report: dict) -> None:
    for source in report["sources"]:
        if source["rows_bad"]:
            ctx.emit("warning", f"{source['file']}: skipped {source['rows_bad']} bad rows (data.on_bad_rows=skip)")
    if report["duplicates_removed"]:
        ctx.emit("warning", f"removed {report['duplicates_removed']} exact duplicate rows")


def model_resolve(ctx: RunContext) -> None:
    """Step 2: resolve the reference, record its digests; in simulation, note the tiny stand-in."""
    model = resolved_model(ctx)
    record = model.record()
    if ctx.simulated:
        record["simulation"] = ("stages after this one run a tiny random model of this architecture "
                                "(2 layers, hidden 64, same module names) instead of these weights")
    ctx.write_artifact("model/model.json", record)
    ctx.emit("model_resolved", f"{model.ref} ({model.model_type}), {len(model.weight_sha256)} weight file(s)",
             weight_sha256=model.weight_sha256)


def load_training_model(ctx: RunContext, precision: str):
    """The model later stages train: the real weights, or the simulation's tiny stand-in."""
    from studio_core.models.resolve import load_model, load_simulation_model
    from studio_core.train.methods import get_method

    model = resolved_model(ctx)
    if ctx.simulated:
        return load_simulation_model(model, len(tokenizer(ctx)))
    return load_model(model, quantize_4bit=get_method(ctx.config.method.name).loads_in_4bit, compute_dtype=precision)


def build_peft_model(ctx: RunContext, model):
    """The configured method on `model` (targets per method and architecture when 'auto'); returns it and them."""
    from studio_core.models.targets import default_target_modules
    from studio_core.train.methods import BuildContext, apply_method

    section = ctx.config.method
    targets = getattr(section, "target_modules", [])
    if targets == "auto":
        targets = default_target_modules(model, section.name)
    max_steps = (simulation_training(ctx.config) if ctx.simulated else ctx.config).training.max_steps
    context = BuildContext(max_steps=max_steps, model_dir=str(resolved_model(ctx).path), loftq=not ctx.simulated)
    if getattr(section, "init", "") == "loftq" and ctx.simulated:
        ctx.emit("simulation", "simulation: the stand-in model is not 4-bit, so loftq initialisation is skipped")
    return apply_method(model, section, targets, context), targets


def preflight_check(ctx: RunContext) -> None:
    """Step 3: the go/no-go report; any error fails the stage with every reason listed."""
    from studio_core import preflight as pf
    from studio_core.errors import PreflightError
    from studio_core.hardware import hardware_profile
    from studio_core.train.methods import count_parameters

    cfg = ctx.config
    report = pf.PreflightReport()
    profile = hardware_profile(ctx.home)
    precision = pf.check_precision(report, cfg.training.precision, profile)
    data = prepared_data(ctx)
    pf.check_tokens(report, data, cfg.data.max_length)
    model = load_training_model(ctx, precision)
    pf.check_targets(report, model, cfg.method)
    if not report.errors:
        _, base_params = count_parameters(model)
        peft_model, _ = build_peft_model(ctx, model)
        adapter = pf.check_parameters(report, peft_model)
        pf.check_rank(report, cfg, adapter, data, getattr(model.config, "hidden_size", None))
        pf.check_memory(report, cfg, model, adapter, base_params, precision, profile)
        if not report.errors:
            tok = tokenizer(ctx)
            pf.micro_run(report, cfg, peft_model, data, tok.pad_token_id, precision, ctx.simulated)
    report.facts["simulated"] = ctx.simulated
    ctx.write_artifact("preflight.json", report.as_dict())
    for warning in report.warnings:
        ctx.emit("warning", warning, stage="preflight")
    if not report.go:
        raise PreflightError("no-go:\n" + "\n".join(f"  - {e}" for e in report.errors))
    ctx.emit("preflight_go", _summary(report.facts))


def _summary(facts: dict) -> str:
    parts = []
    if "parameters" in facts:
        p = facts["parameters"]
        parts.append(f"{p['trainable']:,} trainable ({p['trainable_percent']:.3f}%)")
    if "memory_gib" in facts:
        parts.append(f"~{facts['memory_gib']['total']:.2f} GiB")
    if "time_estimate" in facts:
        parts.append(f"~{facts['time_estimate']['estimated_training_s']:.0f} s for "
                     f"{facts['time_estimate']['max_steps']} steps")
    return "go: " + ", ".join(parts)


def training_init(ctx: RunContext) -> None:
    """Step 4: build the PEFT model on the base (or the simulation's stand-in), refusing full fine-tuning."""
    from transformers import set_seed

    from studio_core.errors import ConfigError, Problem
    from studio_core.hardware import hardware_profile
    from studio_core.train.methods import count_parameters, get_method, rewrites_base, save_initial_adapter
    from studio_core.train.precision import resolve_precision

    cfg = ctx.config
    precision = resolve_precision(cfg.training.precision, hardware_profile(ctx.home))
    set_seed(cfg.training.seed)  # the adapter's initialisation is part of what the seed pins
    backend = training_backend(ctx, precision)
    if backend.name == "unsloth":
        peft_model, targets = build_with_unsloth(ctx, precision)
    else:
        model = load_training_model(ctx, precision)
        if ctx.simulated:  # the adapter will belong to this tiny stand-in: ship it, so the adapter loads and merges
            model.save_pretrained(str(ctx.artifact_dir("simulation-base")), safe_serialization=True)
        peft_model, targets = build_peft_model(ctx, model)
    if rewrites_base(cfg.method):  # kept to convert the trained adapter back onto the original base
        save_initial_adapter(peft_model, ctx.artifact_dir("adapter-init"))
    trainable, total = count_parameters(peft_model)
    if trainable > total / 2:
        raise ConfigError(Problem("method.target_modules", f"{trainable:,} of {total:,} parameters would train: "
                                  "the base model is not frozen; adapt its projections only"))
    method = get_method(cfg.method.name)
    info = {"method": cfg.method.name, "method_parameters": cfg.method.model_dump(mode="json"),
            "target_modules": targets if method.targeted else None, "trainable_parameters": trainable,
            "total_parameters": total, "trainable_percent": round(100 * trainable / total, 4),
            "precision": precision, "base_loaded_in_4bit": method.loads_in_4bit, "mergeable": method.mergeable,
            "backend": backend.name, "backend_reason": backend.reason, "simulated": ctx.simulated}
    ctx.write_artifact("training_init.json", info)
    ctx.outputs.update(peft_model=peft_model, precision=precision, targets=targets, backend=backend.name)
    ctx.emit("training_initialised", f"{cfg.method.name}: {trainable:,} of {total:,} parameters trainable "
                                     f"({info['trainable_percent']:.3f}%), {precision}", **info)


def training_backend(ctx: RunContext, precision: str):
    """unsloth for LoRA/QLoRA on a CUDA GPU where it is installed, else transformers+peft; with the reason."""
    from studio_core.train.backends import STANDARD, BackendChoice, choose_backend

    cfg = ctx.config
    if ctx.simulated:
        return BackendChoice(STANDARD, f"a simulation trains its tiny stand-in on {STANDARD}")
    init = getattr(cfg.method, "init", "default")
    if init != "default" and cfg.training.backend != "unsloth":
        return BackendChoice(STANDARD, f"init={init} is peft's; using {STANDARD}")
    return choose_backend(cfg.method.name, cfg.training.backend, precision=precision)


def build_with_unsloth(ctx: RunContext, precision: str):
    """LoRA/QLoRA through unsloth's FastLanguageModel (fused kernels); the rest of the run is unchanged."""
    from studio_core.models.targets import ARCHITECTURE_TARGETS
    from studio_core.train.backends import load_with_unsloth
    from studio_core.train.methods import get_method

    cfg, model = ctx.config, resolved_model(ctx)
    targets = cfg.method.target_modules
    if targets == "auto":
        targets = ARCHITECTURE_TARGETS.get(model.model_type) or ["q_proj", "k_proj", "v_proj", "o_proj"]
    peft_model, _ = load_with_unsloth(
        model.path, load_in_4bit=get_method(cfg.method.name).loads_in_4bit, max_seq_length=cfg.data.max_length,
        dtype=precision, r=cfg.method.r, alpha=cfg.method.alpha, dropout=cfg.method.dropout, target_modules=targets,
        seed=cfg.training.seed, gradient_checkpointing=cfg.training.gradient_checkpointing,
    )
    return peft_model, targets


def training_exec(ctx: RunContext) -> None:
    """Step 6: train (resuming from the latest checkpoint if there is one), save the adapter, merge it."""
    from studio_core.errors import CancelledError
    from studio_core.train.trainer import latest_checkpoint, train

    cfg, data = ctx.config, prepared_data(ctx)
    checkpoint = latest_checkpoint(ctx.run.path)
    if checkpoint:
        ctx.run.drop_metrics_after(int(checkpoint.rsplit("-", 1)[-1]))  # those steps are replayed
    if ctx.simulated:
        cfg = simulation_training(cfg)
        ctx.emit("simulation", f"simulation: training capped at {cfg.training.max_steps} steps "
                               f"(eval every {cfg.training.eval_steps}, checkpoint every {cfg.training.save_steps})")
    # A row whose assistant tokens were all truncated away has no loss to learn from (and a batch of them is NaN).
    train_rows = [e for e in data.train_tokens if e.supervised_tokens]
    val_rows = [e for e in data.val_tokens if e.supervised_tokens]
    if len(train_rows) < len(data.train_tokens):
        ctx.emit("warning", f"{len(data.train_tokens) - len(train_rows)} training rows have no assistant tokens left "
                            f"after truncation to data.max_length={cfg.data.max_length} and are not trained on")
    outcome = train(cfg, ctx.outputs["peft_model"], train_rows, val_rows, tokenizer(ctx).pad_token_id,
                    ctx.run.path, ctx.outputs["precision"], ctx.emit, ctx.run.metric, ctx.cancel)
    if outcome.cancelled:
        raise CancelledError(f"cancelled at step {outcome.steps}; resume with peft-studio run --resume "
                             f"{ctx.run.run_id}")
    summary = {"steps": outcome.steps, "max_steps": cfg.training.max_steps, "simulated": ctx.simulated,
               "stopped_early": outcome.stopped_early,
               "best_checkpoint": outcome.best_checkpoint and Path(outcome.best_checkpoint).name,
               "best_checkpoint_val_loss": _val_loss_at(outcome.history, outcome.best_checkpoint),
               "best_val_loss": outcome.best_val_loss, "overfitting_warning": outcome.overfitting_warned}
    ctx.write_artifact("training.json", summary)
    _save_and_merge(ctx)


def _val_loss_at(history: list[dict], checkpoint: str | None) -> float | None:
    """The validation loss evaluated at a checkpoint's step: the adapter that ships when early stopping keeps it.

    `best_val_loss` can belong to an evaluation between two checkpoints, so the two are reported separately.
    """
    if not checkpoint:
        return None
    step = int(Path(checkpoint).name.rsplit("-", 1)[-1])
    losses = [h["eval_loss"] for h in history if h.get("step") == step and "eval_loss" in h]
    return losses[-1] if losses else None


SIMULATION_STEPS = {"max_steps": 12, "eval_steps": 4, "save_steps": 4}


def simulation_training(cfg):
    """A simulation proves the loop (steps, evals, checkpoints, early stopping), not the model: cap its length."""
    capped = {k: min(getattr(cfg.training, k), v) for k, v in SIMULATION_STEPS.items()}
    capped["save_steps"] = capped["eval_steps"] * max(1, capped["save_steps"] // capped["eval_steps"])
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=capped)})


def _save_and_merge(ctx: RunContext) -> None:
    from studio_core.train.batching import collate
    from studio_core.train.merge import merge_adapter, save_adapter
    from studio_core.train.methods import get_method, rewrites_base

    base_record = resolved_model(ctx).record()
    if ctx.simulated:
        base_record = {**base_record, "simulation_base": "artifacts/simulation-base"}
    adapter_dir = ctx.artifact_dir("adapter")
    converted = rewrites_base(ctx.config.method)
    save_adapter(ctx.outputs["peft_model"], adapter_dir, base_record,
                 initial_adapter=ctx.run.artifacts / "adapter-init" if converted else None)
    batch = collate(prepared_data(ctx).val_tokens[:2], tokenizer(ctx).pad_token_id)
    method = get_method(ctx.config.method.name)
    if not method.loads_in_4bit:  # a 4-bit base reloads de-quantized: the merge check below covers QLoRA
        _check_reload(ctx, adapter_dir, batch, swap=converted)
    if not method.mergeable:
        reason = (f"{method.title} adds trained virtual tokens instead of changing weights: there is nothing to "
                  "merge, so the adapter ships alone (load it with peft's PeftModel on the base)")
        ctx.write_artifact("merge.json", {"merged": False, "reason": reason,
                                          "reload_check": ctx.outputs["reload_check"]})
        ctx.emit("merged", f"not merged: {reason}")
        return
    merged_dir = ctx.artifact_dir("merged")
    report = merge_adapter(lambda: _fresh_base(ctx), adapter_dir, merged_dir, tokenizer(ctx), batch)
    report["into"] = _merge_base_description(ctx)
    report["merged"] = True
    if "reload_check" in ctx.outputs:
        report["reload_check"] = ctx.outputs["reload_check"]
    ctx.write_artifact("merge.json", report)
    ctx.emit("merged", f"adapter merged; logits relative error {report['relative_error']:.2e} ({report['into']})")


def _check_reload(ctx: RunContext, adapter_dir: Path, batch: dict, swap: bool) -> None:
    """The saved adapter, loaded by stock peft on a fresh base, must compute what the trained model computes.

    PiSSA/OLoRA (`swap`): the trained model's base holds residual weights, so its `disable_adapter()` is not the
    base model; the converted adapter on the original base is the same function with the true base behind it,
    and it replaces the trained model for evaluation.
    """
    import torch
    from peft import PeftModel

    from studio_core.errors import StudioError
    from studio_core.train.merge import MERGE_TOLERANCE, relative_error
    from studio_core.train.precision import autocast

    trained = ctx.outputs["peft_model"].eval()
    device, dtype = next(trained.parameters()).device, trained.get_base_model().dtype
    reloaded = PeftModel.from_pretrained(_fresh_base(ctx).to(device=device, dtype=dtype), str(adapter_dir)).eval()
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    # Both at the run's compute precision: the Trainer left the trained model's forward under bf16/fp16 autocast.
    with torch.no_grad(), autocast(ctx.outputs["precision"], device.type):
        error = relative_error(trained(**inputs).logits.float(), reloaded(**inputs).logits.float())
    what = "trained model vs its saved adapter " + ("converted onto the original base" if swap else "reloaded")
    ctx.outputs["reload_check"] = {"relative_error": error, "tolerance": MERGE_TOLERANCE, "what": what}
    if ctx.outputs.get("backend") == "unsloth":  # its fused kernels round differently from stock peft's
        ctx.outputs["reload_check"]["enforced"] = False
    elif error > MERGE_TOLERANCE:
        raise StudioError(f"the saved adapter does not reproduce the trained model: {what}, relative error "
                          f"{error:.2e} > {MERGE_TOLERANCE:.0e}")
    if swap:
        ctx.outputs["peft_model"] = reloaded


def _fresh_base(ctx: RunContext):
    """The base to merge into, in fp32: QLoRA's is its 4-bit base de-quantized (what the adapter trained on)."""
    from studio_core.models.resolve import load_model
    from studio_core.train.methods import get_method

    if ctx.simulated:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(ctx.run.artifacts / "simulation-base", use_safetensors=True)
    if get_method(ctx.config.method.name).loads_in_4bit:
        return load_model(resolved_model(ctx), quantize_4bit=True, compute_dtype="fp32").dequantize()
    return load_model(resolved_model(ctx))


def _merge_base_description(ctx: RunContext) -> str:
    from studio_core.train.methods import get_method

    if ctx.simulated:
        return "the simulation's tiny random base (fp32)"
    if get_method(ctx.config.method.name).loads_in_4bit:
        return "the nf4 base de-quantized to fp32 (QLoRA trained against those weights, not the originals)"
    return "the fp32 base weights"


def evaluation(ctx: RunContext) -> None:
    """Step 8 (first version): loss, perplexity and the task metric for base and tuned, plus samples."""
    from studio_core.evaluate.basic import run_evaluation
    from studio_core.runs import atomic_write_jsonl

    cfg = ctx.config
    report, answers = run_evaluation(trained_model(ctx), tokenizer(ctx), prepared_data(ctx), cfg,
                                     run_precision(ctx), metrics=ctx.run.metrics(),
                                     progress=lambda done, total: ctx.emit("eval_progress", f"{done}/{total} answers",
                                                                           done=done, total=total))
    report["simulated"] = ctx.simulated
    ctx.write_artifact("eval/metrics.json", report)
    out = ctx.artifact_dir("eval")
    # The user's own prompts come first in `answers`, then held-out rows: samples keep all the former.
    atomic_write_jsonl(out / "samples.jsonl", answers[: cfg.evaluation.samples + len(cfg.evaluation.prompts)])
    atomic_write_jsonl(out / "answers.jsonl", answers)
    b, t = report["base"], report["tuned"]
    ctx.emit("evaluated", f"val loss {b['val_loss']:.4f} -> {t['val_loss']:.4f}; {report['task_metric']} "
                          f"{b['task']['value']:.3f} -> {t['task']['value']:.3f}", **report)


def tgsp_packing(ctx: RunContext) -> None:
    """Step 11: the package (payload, evidence, optimization profile, manifest), optionally one archive too."""
    from studio_core.package import build_package, export_archive

    package = build_package(ctx.run.path)
    message = f"package at {package.relative_to(ctx.run.path)}"
    if ctx.config.package.archive:
        archive = export_archive(package, ctx.run.artifacts / "package.tar.gz")
        message += f", archive {archive.name}"
    ctx.emit("packaged", message)


def evidence_signing(ctx: RunContext) -> None:
    """Step 12: sign the manifest (Ed25519 + ML-DSA-65), verify it back, then the policy gate if enabled."""
    import os

    from studio_core.errors import StudioError
    from studio_core.package import load_private_keys, load_public_keys, promote, sign_package, verify_package
    from studio_core.package.policy import PolicyRefused

    cfg = ctx.config
    package = ctx.run.artifacts / "package"
    keys = load_private_keys(ctx.home, cfg.signing.key_id, os.environ.get(cfg.signing.passphrase_env) or None)
    sign_package(package, keys)
    report = verify_package(package, load_public_keys(ctx.home))
    ctx.write_artifact("signing.json", report.to_dict())
    if not report.ok:
        raise StudioError("the package does not verify right after signing: " + "; ".join(report.reasons))
    ctx.emit("signed", f"signed with key {keys.key_id[:12]} (Ed25519 + ML-DSA-65); verified")
    if cfg.policy.enabled:
        result = promote(package, Path(cfg.policy.path), cfg.policy.channel, ctx.home)
        ctx.write_artifact("policy.json", result.to_dict())
        if not result.passed:
            raise PolicyRefused(result)
        ctx.emit("promoted", f"promoted to channel {cfg.policy.channel}")


def export_onnx(ctx: RunContext) -> None:
    """Step 9: the merged model to ONNX (dynamo, external data), then ONNX Runtime against PyTorch."""
    from studio_core.errors import StudioError
    from studio_core.export.onnx import check_parity
    from studio_core.export.onnx import export_onnx as export

    cfg, merged = ctx.config.export, ctx.run.artifacts / "merged"
    if not (merged / "config.json").is_file():
        raise StudioError("no merged model in artifacts/merged: the method's adapter cannot be merged, so there is "
                          "nothing to export; disable export")
    out = ctx.artifact_dir("onnx")
    report = export(merged, out, cfg.opset)
    try:
        parity = check_parity(merged, out / report["onnx_file"], [tuple(s) for s in cfg.parity_shapes],
                              tolerance=cfg.parity_tolerance)
    except StudioError as e:
        ctx.write_artifact("onnx/export.json", {**report, "parity": getattr(e, "report", None)})
        raise
    ctx.write_artifact("onnx/export.json", {**report, "parity": parity,
                                            "max_relative_error": parity["max_relative_error"]})
    ctx.emit("exported", f"ONNX opset {report['opset']}, {report['size_bytes'] / 2**20:.0f} MiB; ONNX Runtime vs "
                         f"PyTorch max relative error {parity['max_relative_error']:.2e}")


def compile_engine(ctx: RunContext) -> None:
    """Step 10: TensorRT where it and a GPU are usable, else an ONNX Runtime optimized model; says which."""
    from studio_core.export.compile import compile_model

    cfg = ctx.config.compile
    report = compile_model(ctx.run.artifacts / "onnx", ctx.artifact_dir("engine"), cfg.backend, cfg.int8,
                           cfg.precision, tuple(cfg.batch_range), tuple(cfg.sequence_range), cfg.int8_scheme)
    ctx.write_artifact("engine/compile.json", report)
    why = f" ({report['tensorrt_not_used']})" if report.get("tensorrt_not_used") else ""
    ctx.emit("compiled", f"built {report['engine']}{why}")
