"""The stage recipes: each checks its inputs, calls its package, writes its artifacts and emits events.

`workflow.STAGES` lists them in wizard order; the work itself lives in the concern packages (data/,
models/, preflight.py, ...), so these stay short.

What a stage needs from an earlier one it reads through the run context's accessors (`ctx.prepared_data()`,
`ctx.precision()`, `lifecycle.trained_model(ctx)`): from this process's cache when the earlier stage ran in it,
else from the run dir, so a resumed run or another process can start at any stage after Training Exec. Training
Init and Training Exec are the one pair that share a live object (the PEFT model being trained), so they run
in one process. The model's lifecycle (load, build, save, reload check, merge) is `studio_core.train.lifecycle`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from studio_core.evaluate.general_text import general_text_perplexity
from studio_core.sparsity import run as sparsity
from studio_core import privacy
from studio_core import comm
from studio_core.train.batching import supervised_rows
from studio_core.train.distributed import is_distributed, train_distributed
from studio_core.train.lifecycle import (
    build_peft_model,
    build_with_unsloth,
    load_training_model,
    save_and_merge,
    simulation_training,
    trained_model,
    training_backend,
)

if TYPE_CHECKING:
    from studio_core.context import RunContext



def data_resolve(ctx: RunContext) -> None:
    """Step 1: validate every row (before touching any model), split, tokenize, report, digest."""
    from studio_core.data.prepare import prepare_data
    from studio_core.runs import atomic_write_jsonl

    cfg = ctx.config.data
    data = prepare_data(cfg, lambda: ctx.tokenizer(), simulate=ctx.simulated)
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
    for item in report.get("quality", []):  # the data report's quality section, one line per item
        if item["code"] != "duplicate":
            ctx.emit("warning", f"[{item['code']}] {item['message']}")


def model_resolve(ctx: RunContext) -> None:
    """Step 2: resolve the reference, record its digests; in simulation, note the tiny stand-in."""
    model = ctx.resolved_model()
    record = model.record()
    if ctx.simulated:
        record["simulation"] = ("stages after this one run a tiny random model of this architecture "
                                "(2 layers, hidden 64, same module names) instead of these weights")
    ctx.write_artifact("model/model.json", record)
    ctx.emit("model_resolved", f"{model.ref} ({model.model_type}), {len(model.weight_sha256)} weight file(s)",
             weight_sha256=model.weight_sha256)


def preflight_check(ctx: RunContext) -> None:
    """Step 3: the go/no-go report; any error fails the stage with every reason listed."""
    from studio_core import preflight as pf
    from studio_core.errors import PreflightError
    from studio_core.hardware import hardware_profile
    from studio_core.train.adapters import count_parameters

    cfg = ctx.config
    report = pf.PreflightReport()
    profile = hardware_profile(ctx.home)
    precision = pf.check_precision(report, cfg.training.precision, profile)
    data = ctx.prepared_data()
    pf.check_tokens(report, data, cfg.data.max_length)
    pf.check_privacy(report, cfg, data, (simulation_training(cfg) if ctx.simulated else cfg).training.max_steps)
    model = load_training_model(ctx, precision)
    pf.check_targets(report, model, cfg.method)
    if not report.errors:
        _, base_params = count_parameters(model)
        peft_model, _ = build_peft_model(ctx, model)
        adapter = pf.check_parameters(report, peft_model)
        pf.check_rank(report, cfg, adapter, data, getattr(model.config, "hidden_size", None))
        pf.check_memory(report, cfg, model, adapter, base_params, precision, profile)
        pf.check_disk(report, cfg, ctx.run.path, base_params, adapter)
        if not report.errors:
            tok = ctx.tokenizer()
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
        parts.append(f"~{facts['time_estimate']['estimated_training_s']:.0f} s of training for "
                     f"{facts['time_estimate']['max_steps']} steps, {facts['time_estimate']['validations']} "
                     f"validations and {facts['time_estimate']['checkpoints']} checkpoints")
    return "go: " + ", ".join(parts)


def training_init(ctx: RunContext) -> None:
    """Step 4: build the PEFT model on the base (or the simulation's stand-in), refusing full fine-tuning."""
    from transformers import set_seed

    from studio_core.errors import ConfigError, Problem
    from studio_core.hardware import hardware_profile
    from studio_core.methods import get_method
    from studio_core.train.adapters import count_parameters, rewrites_base, save_initial_adapter
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
        sparsity.prune_base(ctx, model, lambda m: _base_quality(ctx, m))  # step 5's masks, before the adapter
        peft_model, targets = build_peft_model(ctx, model)
        sparsity.mask_adapter(ctx, peft_model)
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
            "precision": precision, "base_loaded_in_4bit": method.loads_in_4bit, "base_dtype": _base_dtype(peft_model),
            "mergeable": method.mergeable,
            "backend": backend.name, "backend_reason": backend.reason, "simulated": ctx.simulated}
    ctx.write_artifact("training_init.json", info)
    ctx.outputs.update(peft_model=peft_model, precision=precision, targets=targets, backend=backend.name)
    ctx.emit("training_initialised", f"{cfg.method.name}: {trainable:,} of {total:,} parameters trainable "
                                     f"({info['trainable_percent']:.3f}%), {precision}, base held in "
                                     f"{info['base_dtype']}", **info)


def _base_dtype(peft_model) -> str:
    """The dtype most of the frozen base's weights are held in (what training really ran on)."""
    from collections import Counter

    counts = Counter()
    for p in peft_model.parameters():
        if not p.requires_grad:
            counts[str(p.dtype).removeprefix("torch.")] += p.numel()
    return counts.most_common(1)[0][0] if counts else "none"


def _base_quality(ctx: RunContext, model) -> dict:
    """A base's validation loss on the rows step 8 measures, and its general-text perplexity (pruning's table)."""
    from studio_core.evaluate.general_text import base_quality

    data = ctx.prepared_data()
    return base_quality(model, ctx.tokenizer(), data.val_tokens[:ctx.config.evaluation.max_rows])


def pruning_init(ctx: RunContext) -> None:
    """Step 5: verify the 2:4 masks Training Init put on the base (before the adapter) and record them."""
    sparsity.pruning_init(ctx)


def training_exec(ctx: RunContext) -> None:
    """Step 6: train (resuming from the latest checkpoint if there is one), save the adapter, merge it."""
    from studio_core.errors import CancelledError
    from studio_core.train.trainer import latest_checkpoint, train

    cfg, data = ctx.config, ctx.prepared_data()
    checkpoint = latest_checkpoint(ctx.run.path)
    if checkpoint:
        ctx.run.drop_metrics_after(int(checkpoint.rsplit("-", 1)[-1]))  # those steps are replayed
    if ctx.simulated:
        cfg = simulation_training(cfg)
        ctx.emit("simulation", f"simulation: training capped at {cfg.training.max_steps} steps "
                               f"(eval every {cfg.training.eval_steps}, checkpoint every {cfg.training.save_steps})")
    train_rows, val_rows = supervised_rows(data)
    if len(train_rows) < len(data.train_tokens):
        ctx.emit("warning", f"{len(data.train_tokens) - len(train_rows)} training rows have no assistant tokens left "
                            f"after truncation to data.max_length={cfg.data.max_length} and are not trained on")
    if is_distributed(cfg):  # torchrun workers train; this process launches them and keeps the run dir
        if ctx.outputs.get("backend") == "unsloth":
            from studio_core.errors import ConfigError, Problem

            raise ConfigError(Problem("training.backend", "unsloth trains in one process; set "
                                      "training.backend=transformers+peft for training.nproc > 1"))
        outcome = train_distributed(ctx, cfg)
    else:
        outcome = train(cfg, ctx.outputs["peft_model"], train_rows, val_rows, ctx.tokenizer().pad_token_id,
                        ctx.run.path, ctx.outputs["precision"], ctx.emit, ctx.run.metric, ctx.cancel,
                        trainer_parts(ctx))
    if outcome.cancelled:
        raise CancelledError(f"cancelled at step {outcome.steps}; resume with peft-studio run --resume "
                             f"{ctx.run.run_id}")
    summary = {"steps": outcome.steps, "max_steps": cfg.training.max_steps, "simulated": ctx.simulated,
               "stopped_early": outcome.stopped_early,
               "best_checkpoint": outcome.best_checkpoint and Path(outcome.best_checkpoint).name,
               "best_checkpoint_val_loss": _val_loss_at(outcome.history, outcome.best_checkpoint),
               "best_val_loss": outcome.best_val_loss, "overfitting_warning": outcome.overfitting_warned,
               "answer_logits_only": outcome.answer_logits_only}
    ctx.write_artifact("training.json", summary)
    sparsity.check_trained(ctx, ctx.outputs["peft_model"], lambda m: general_text_perplexity(m, ctx.tokenizer()))
    save_and_merge(ctx)
    _model_cards(ctx)


def _model_cards(ctx: RunContext) -> None:
    """README.md in the adapter and merged folders; rewritten by the stages that add to it (metrics, engines)."""
    from studio_core.package.card import write_model_cards

    write_model_cards(ctx.run.path)


def trainer_parts(ctx: RunContext):
    """What the run's enabled features attach to the Trainer (`train.trainer.TrainerParts`): trackers, a privacy
    engine, a gradient communication hook, a packing collator, the label loss. Each feature's module has one function of the
    context returning its parts (None when the feature is off), and joins them here on a line of its own."""
    from studio_core.connectors import trackers
    from studio_core.train import labels
    from studio_core.train.trainer import TrainerParts

    parts = TrainerParts()
    parts.add(trackers.trainer_parts(ctx))
    parts.add(privacy.trainer_parts(ctx))
    parts.add(comm.trainer_parts(ctx))
    parts.add(labels.trainer_parts(ctx))
    return parts


def _val_loss_at(history: list[dict], checkpoint: str | None) -> float | None:
    """The validation loss evaluated at a checkpoint's step: the adapter that ships when early stopping keeps it.

    `best_val_loss` can belong to an evaluation between two checkpoints, so the two are reported separately.
    """
    if not checkpoint:
        return None
    step = int(Path(checkpoint).name.rsplit("-", 1)[-1])
    losses = [h["eval_loss"] for h in history if h.get("step") == step and "eval_loss" in h]
    return losses[-1] if losses else None



def dynamic_sparsification(ctx: RunContext) -> None:
    """Step 7: what the gradient compression sent during training, and the shipped update as a sparse top-k file
    with its size-vs-quality curve (`studio_core.comm`)."""
    from studio_core.comm import sparsification_report

    report = sparsification_report(ctx)
    ctx.write_artifact("comm/report.json", report)
    ctx.emit("sparsified", report["summary"], report_path="artifacts/comm/report.json")


def evaluation(ctx: RunContext) -> None:
    """Step 8: loss, perplexity, the task metric and general-text perplexity for base and tuned, plus samples."""
    from studio_core.evaluate.basic import run_evaluation
    from studio_core.runs import atomic_write_jsonl

    cfg = ctx.config
    report, answers = run_evaluation(trained_model(ctx), ctx.tokenizer(), ctx.prepared_data(), cfg,
                                     ctx.precision(), metrics=ctx.run.metrics(),
                                     progress=lambda done, total: ctx.emit("eval_progress", f"{done}/{total} answers",
                                                                           done=done, total=total))
    report["simulated"] = ctx.simulated
    if (ctx.run.artifacts / "comm" / "report.json").is_file():  # step 7's size-vs-quality curve of the update
        report["update_compression"] = ctx.read_artifact("comm/report.json").get("update")
    ctx.write_artifact("eval/metrics.json", report)
    out = ctx.artifact_dir("eval")
    # The user's own prompts come first in `answers`, then held-out rows: samples keep all the former.
    atomic_write_jsonl(out / "samples.jsonl", answers[: cfg.evaluation.samples + len(cfg.evaluation.prompts)])
    atomic_write_jsonl(out / "answers.jsonl", answers)
    b, t = report["base"], report["tuned"]
    message = (f"val loss {b['val_loss']:.4f} -> {t['val_loss']:.4f}; {report['task_metric']} "
               f"{b['task']['value']:.3f} -> {t['task']['value']:.3f}")
    if "verdicts" in t["task"]:  # the demo's decision: say whether it beats always giving the common verdict
        from studio_core.evaluate.verdicts import headline

        message += f"; tuned {headline(t['task']['verdicts'])}"
    general = report["general_text"]
    message += f"; general-text perplexity {general['base_ppl']:.2f} -> {general['tuned_ppl']:.2f}"
    ctx.emit("evaluated", message, **report)
    _model_cards(ctx)


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
    if ctx.config.pruning.enabled:
        report["sparsity"] = sparsity.onnx_check(out / report["onnx_file"], ctx)
    ctx.write_artifact("onnx/export.json", {**report, "parity": parity,
                                            "max_relative_error": parity["max_relative_error"]})
    ctx.emit("exported", f"ONNX opset {report['opset']}, {report['size_bytes'] / 2**20:.0f} MiB; ONNX Runtime vs "
                         f"PyTorch max relative error {parity['max_relative_error']:.2e}")


def compile_engine(ctx: RunContext) -> None:
    """Step 10: the engines that generate from the merged model (`compile.engines`: a KV-cache ONNX model, GGUF
    for llama.cpp/Ollama), each checked against it; with step 9's ONNX export, also TensorRT where it and a GPU
    are usable, else an ONNX Runtime optimized model. The report names what was really built."""
    from studio_core.errors import StudioError
    from studio_core.export.compile import compile_model
    from studio_core.export.generation import build_engines, pre_tokenizer_for

    cfg, merged, out = ctx.config.compile, ctx.run.artifacts / "merged", ctx.artifact_dir("engine")
    report: dict = {}
    if (ctx.run.artifacts / "onnx" / "model.onnx").is_file():
        report = compile_model(ctx.run.artifacts / "onnx", out, cfg.backend, cfg.int8, cfg.precision,
                               tuple(cfg.batch_range), tuple(cfg.sequence_range), cfg.int8_scheme)
        if ctx.config.pruning.enabled:  # the engine holds the 2:4 merged weights; say what that buys on this engine
            report["sparsity"] = sparsity.engine_note(report)
    if cfg.engines and not (merged / "config.json").is_file():
        raise StudioError("no merged model in artifacts/merged (the method's adapter cannot be merged): "
                          "compile.engines has nothing to build from; set compile.engines=[]")
    try:
        report["generation"] = build_engines(merged, out, list(cfg.engines), cfg.onnx_kv_precision,
                                             tuple(cfg.gguf_quants), pre_tokenizer_for(ctx.config.model.ref))
    except StudioError as e:  # the figures of a failed parity check are kept beside the message
        ctx.write_artifact("engine/compile.json", {**report, "failed": str(e), "parity": getattr(e, "report", None)})
        raise
    if (merged / "config.json").is_file():
        from studio_core.export.serving import check_serving_folder

        report["serving_folder"] = check_serving_folder(merged)
    report["engines_built"] = ([report["engine"]] if "engine" in report else []) + [
        g["engine"] + (f" ({g['precision']})" if "precision" in g else "") for g in report["generation"].values()]
    report.setdefault("engine", next(iter(report["engines_built"]), None))
    ctx.write_artifact("engine/compile.json", report)
    _model_cards(ctx)
    why = f" ({report['tensorrt_not_used']})" if report.get("tensorrt_not_used") else ""
    ctx.emit("compiled", f"built {', '.join(report['engines_built'])}{why}")
