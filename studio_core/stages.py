"""The stage recipes: each checks its inputs, calls its package, writes its artifacts and emits events.

`workflow.STAGES` lists them in wizard order; the work itself lives in the concern packages (data/,
models/, preflight.py, ...), so these stay short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # workflow imports this module to build its stage list
    from studio_core.workflow import RunContext


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


def data_resolve(ctx: RunContext) -> None:
    """Step 1: validate every row (before touching any model), split, tokenize, report, digest."""
    from studio_core.data.prepare import prepare_data
    from studio_core.digest import canonical_json
    from studio_core.runs import atomic_write_text

    cfg = ctx.config.data
    data = prepare_data(cfg, lambda: tokenizer(ctx), simulate=ctx.simulated)
    out = ctx.artifact_dir("data")
    for split, rows in (("train", data.train), ("val", data.val)):
        atomic_write_text(out / f"{split}.jsonl", "".join(canonical_json({"messages": r}) + "\n" for r in rows))
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


def preflight_check(ctx: RunContext) -> None:
    """Step 3: the go/no-go report; any error fails the stage with every reason listed."""
    from studio_core import preflight as pf
    from studio_core.errors import PreflightError
    from studio_core.hardware import hardware_profile
    from studio_core.train.methods import apply_method, count_parameters

    cfg = ctx.config
    report = pf.PreflightReport()
    profile = hardware_profile(ctx.home)
    precision = pf.check_precision(report, cfg.training.precision, profile)
    data = ctx.outputs["data"]
    pf.check_tokens(report, data, cfg.data.max_length)
    model = load_training_model(ctx, precision)
    targets = pf.check_targets(report, model, cfg.method.target_modules)
    if not report.errors:
        _, base_params = count_parameters(model)
        peft_model = apply_method(model, cfg.method, targets)
        adapter = pf.check_parameters(report, peft_model)
        pf.check_rank(report, cfg, adapter, data)
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
