"""Each step's output, drawn from what its stage wrote in the run dir (or from a preview of the same shape)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import activity
from app.charts import histogram_chart


def last_run_caption(run, what: str) -> None:
    status = run.read_status()
    sim = ", simulation" if status.get("simulated") else ""
    st.caption(f"{what} of run `{run.run_id}` ({status['state']}{sim}).")


def from_last_run(relative: str, title: str, draw, empty: str) -> None:
    """A step's 'last run' section: the newest artifact at `relative`, drawn by `draw(data, run)`."""
    st.subheader(title)
    found = activity.latest_artifact(relative)
    if found is None:
        st.caption(empty)
        return
    run, path = found
    last_run_caption(run, "From the last run")
    data = activity.read_json(path) if path.suffix == ".json" else path
    draw(data, run)


def data_report(report: dict[str, Any], key: str) -> None:
    """Schema, rows kept and dropped with the reasons, data quality, the token histogram, the digest."""
    rows = report["rows"]
    for source in report["sources"]:
        st.markdown(f"**{source['file']}**: schema **{source['row_schema']}**, {source['rows_valid']} valid rows, "
                    f"{source['rows_bad']} dropped as invalid.")
        if source["bad_rows"]:
            st.dataframe(source["bad_rows"], hide_index=True, key=f"{key}-bad-{source['file']}")
    st.markdown(f"Kept **{rows['train']} train / {rows['val']} validation** rows after removing "
                f"{report['duplicates_removed']} exact duplicates.")
    if report.get("simulation_slice"):
        sl = report["simulation_slice"]
        st.caption(f"Simulation trains on a slice: {sl['train']} train / {sl['val']} validation rows.")
    _quality(report.get("quality"), key)
    tokens = report["tokens"]["train"]
    st.markdown(f"Tokens per example: median {tokens['p50']}, p95 {tokens['p95']}, longest {tokens['max']}; "
                f"{tokens['truncated']} longer than {tokens['max_length']} (truncated), "
                f"{tokens['no_supervised_tokens']} with no answer tokens left.")
    st.plotly_chart(histogram_chart(tokens["histogram"], "Token lengths (train)"), key=f"{key}-hist")
    st.markdown(f"Digest (sha256 of the split rows): `{report['sha256']}`")


def _quality(items: list[dict] | None, key: str) -> None:
    """The report's data-quality findings (errors block a run, warnings do not), each with the records concerned."""
    if items is None:
        return
    if not items:
        st.success("Data quality: no findings.")
        return
    st.markdown("**Data quality**")
    for i, item in enumerate(items):
        show = st.error if item.get("level") == "error" else st.warning
        count = f" ({item['count']} rows)" if item.get("count") is not None else ""
        show(f"`{item.get('code', '')}`: {item.get('message', '')}{count}")
        records = item.get("records") or []
        if records:
            with st.expander(f"Records: {item.get('code', '')}"):
                if all(isinstance(r, (int, str)) for r in records):
                    st.write(", ".join(str(r) for r in records))
                else:
                    st.dataframe(records, hide_index=True, key=f"{key}-quality-{i}")


def conversations(rows: list[list[dict]]) -> None:
    for row in rows:
        with st.container(border=True):
            for message in row:
                st.markdown(f"**{message['role']}**: {message['content']}")


def model_card(record: dict[str, Any], parameters: int | None = None, targets: list[str] | None = None) -> None:
    """Architecture, parameters, target modules and the labelled digests."""
    arch = ", ".join(record.get("architectures") or []) or "?"
    size = f", {parameters:,} parameters" if parameters else ""
    st.markdown(f"**{record['ref']}**: {record['model_type']} ({arch}){size}, from `{record['path']}`")
    if targets:
        st.markdown("Default target modules: " + ", ".join(f"`{m}`" for m in targets))
    if record.get("simulation"):
        st.caption(f"Simulation: {record['simulation']}.")
    digests = [{"file": name, "what": "weights", "sha256": d} for name, d in record["weight_sha256"].items()]
    digests += [{"file": name, "what": "tokenizer", "sha256": d} for name, d in record["tokenizer_sha256"].items()]
    st.dataframe(digests, hide_index=True, width="stretch")


# (report key, check, the words its warnings start with or name)
CHECKS = [("target_modules", "Target modules exist", "method.target_modules"),
          ("parameters", "Trainable share", "trainable"), ("memory_gib", "Memory fits", "memory"),
          ("precision", "Precision supported", "training.precision"), ("tokens", "Token lengths", "data.max_length"),
          ("rank", "Rank suits the data", "method.r="), ("time_estimate", "Time estimate", "estimate")]


PRIVACY_CHECK = ("privacy", "Differential privacy", "privacy")


def preflight_checklist(report: dict[str, Any]) -> None:
    """The go/no-go report as a checklist: each check with its figure, the errors and warnings by name."""
    (st.success if report["go"] else st.error)("GO: nothing blocks this run." if report["go"] else
                                               "NO-GO: fix the errors below before a long run.")
    for message in report["errors"]:
        st.error(message)
    for message in dict.fromkeys(report["warnings"]):
        st.warning(message)
    rows = []
    for key, title, marker in CHECKS + ([PRIVACY_CHECK] if "privacy" in report else []):
        if key not in report:
            rows.append({"check": f"– {title}", "result": "not run (an earlier check failed)"})
            continue
        flagged = [m for m in report["errors"] + report["warnings"] if marker in m]
        mark = "✗" if any(m in report["errors"] for m in flagged) else "⚠" if flagged else "✓"
        rows.append({"check": f"{mark} {title}", "result": _check_text(key, report[key])})
    st.table(_indexed(rows, "check"))
    if report.get("simulated"):
        st.caption("Simulation: memory and time were measured on the tiny stand-in model, not the real one.")


def _indexed(rows: list[dict], column: str):
    """Rows as a table whose row labels are `column` (no 0, 1, 2 index)."""
    import pandas as pd

    return pd.DataFrame(rows).set_index(column)


def _check_text(key: str, value: Any) -> str:
    if value is None:
        return "none: this method adapts no module"
    if key == "target_modules":
        return ", ".join(value)
    if key == "parameters":
        return f"{value['trainable']:,} of {value['total']:,} trainable ({value['trainable_percent']:.3f}%)"
    if key == "memory_gib":
        return (f"~{value['total']:.2f} GiB needed, {value['budget']:.1f} GiB budget of {value['available']:.1f} GiB "
                f"free ({value['device']})")
    if key == "precision":
        return f"{value['requested']} → {value['resolved']}"
    if key == "tokens":
        return f"p95 {value['p95']}, longest {value['max']} of {value['max_length']}; {value['truncated']} truncated"
    if key == "rank":
        return f"r={value['r']}, recommended r={value['recommended_r']}"
    if key == "privacy":
        return (f"noise multiplier {value['noise_multiplier']:.4f} for epsilon {value['expected_epsilon']:.3f} after "
                f"{value['expected_steps']} of {value['steps']} steps (sample rate {value['sample_rate']:.5f}, delta "
                f"{value['delta']:.2g}, N = {value['examples']}); {value['per_sample_gradients']}")
    if key == "time_estimate":
        counted = ""  # runs from before the estimate counted validations, or checkpoints, lack those parts
        if "validation_s" in value:
            counted += f" + {value['validation_s']:.0f} s for {value['validations']} validations"
        if "checkpoint_s" in value:
            counted += f" + {value['checkpoint_s']:.1f} s for {value['checkpoints']} checkpoints"  # often under 1 s
        return (f"~{value['estimated_training_s']:.0f} s of training: {value['max_steps']} steps at "
                f"{value['seconds_per_optimizer_step']:.2f} s/step{counted} (measured on the {value['measured_on']}; "
                "not timed: saving and merging the adapter after the last step, and step 8's evaluation)")
    return str(value)


def peft_summary(info: dict[str, Any], run) -> None:
    st.markdown(f"**{info['method']}** on {info['backend']} ({info['backend_reason']}), precision "
                f"{info['precision']}: **{info['trainable_parameters']:,}** of {info['total_parameters']:,} parameters "
                f"trainable (**{info['trainable_percent']:.3f}%**).")
    if info.get("target_modules"):
        st.markdown("Modules wrapped: " + ", ".join(f"`{m}`" for m in info["target_modules"]))
    notes = [] if info["mergeable"] else ["cannot merge: ships as an adapter only"]
    if info["base_loaded_in_4bit"]:
        notes.append("base loaded in 4-bit")
    elif info.get("base_dtype") == "bfloat16":  # runs before it was recorded held their base in fp32
        notes.append("frozen base held in bf16 (the adapter trains in fp32; the merge uses the fp32 base)")
    if notes:
        st.caption("; ".join(notes))


def parity(report: dict[str, Any], run) -> None:
    p = report.get("parity") or {}
    passed = p.get("passed", False)
    (st.success if passed else st.error)(
        f"ONNX Runtime against PyTorch: largest relative logit error {p.get('max_relative_error', float('nan')):.2e}, "
        f"tolerance {p.get('tolerance', '?')}: {'passed' if passed else 'FAILED'}.")
    st.dataframe([{"batch x sequence": "x".join(map(str, s["shape"])), "relative error": f"{s['relative_error']:.2e}"}
                  for s in p.get("shapes", [])], hide_index=True)
    st.caption(f"opset {report.get('opset')}, {report.get('size_bytes', 0) / 2**20:.1f} MiB with external data, "
               f"exported in {report.get('export_seconds', 0):.0f} s on {p.get('runtime', '?')}. "
               f"KV cache: {report.get('kv_cache', '?')}.")


def engine(report: dict[str, Any], run) -> None:
    built = report.get("engines_built") or [report.get("engine")]
    st.markdown("Built **" + "**, **".join(str(b) for b in built) + "**"
                + (f" in {report['compile_seconds']:.1f} s." if "compile_seconds" in report else "."))
    if report.get("failed"):
        st.error(report["failed"])
    if report.get("generation"):
        generation_engines(report["generation"], run)
    if report.get("backend"):
        st.markdown(f"Prefill engine from step 9's ONNX: **{report.get('engine')}** ({report.get('backend')}, "
                    f"{report.get('precision')}).")
    if report.get("tensorrt_not_used"):
        st.caption(f"TensorRT not used: {report['tensorrt_not_used']}")
    if report.get("accuracy"):
        st.dataframe([{"compared": k.replace("_", " "), "relative error": f"{v['relative_error']:.2e}",
                       "top-1 agreement": v.get("top1_agreement")} for k, v in report["accuracy"].items()],
                     hide_index=True)


def generation_engines(engines: dict[str, Any], run) -> None:
    """Each engine that generates: its files with size and digest, its parity against the merged model, downloads."""
    rows = []
    if "onnx_kv" in engines:
        kv, parity = engines["onnx_kv"], engines["onnx_kv"]["parity"]
        rows.append({"engine": f"{kv['engine']} ({kv['precision']})", "file": f"{kv['folder']}/",
                     "size": _size(sum(f["bytes"] for f in kv["files"].values())),
                     "sha256": kv["files"]["model.onnx.data"]["sha256"][:16] + "… (weights)",
                     "relative error": f"{parity['relative_error']:.2e}", "top-1": f"{parity['top1_agreement']:.3f}",
                     "passed": parity["passed"]})
    if "gguf" in engines:
        g = engines["gguf"]
        for quant, entry in g["files"].items():
            parity = g["parity"]["quants"][quant]
            rows.append({"engine": f"{g['engine']} ({quant})", "file": f"{g['folder']}/{entry['file']}",
                         "size": _size(entry["bytes"]), "sha256": entry["sha256"][:16] + "…",
                         "relative error": f"{parity['relative_error']:.2e}", "top-1": f"{parity['top1_agreement']:.3f}",
                         "passed": parity["passed"]})
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption("Parity: logits against the fp32 merged model on fixed prompts (GGUF read back by transformers; "
               "the ONNX model teacher-forced through onnxruntime-genai). Digests are in the package's manifest too.")
    _engine_downloads(engines, run)


def _engine_downloads(engines: dict[str, Any], run) -> None:
    from app.archives import zip_folder

    engine_dir = run.artifacts / "engine"
    buttons = []
    if "gguf" in engines:
        folder = engine_dir / engines["gguf"]["folder"]
        buttons += [(f"Download {e['file']}", folder / e["file"]) for e in engines["gguf"]["files"].values()]
        buttons.append(("Download the Modelfile", folder / engines["gguf"]["modelfile"]["file"]))
    if "onnx_kv" in engines:
        buttons.append((f"Download {engines['onnx_kv']['folder']} (.zip)", engine_dir / engines["onnx_kv"]["folder"]))
    columns = st.columns(max(len(buttons), 1))
    for column, (label, path) in zip(columns, buttons):
        if path.is_dir():
            column.download_button(label, lambda path=path: zip_folder(path), file_name=f"{path.name}.zip",
                                   mime="application/zip", key=f"engine-dl-{path.name}")
        elif path.is_file():
            column.download_button(label, lambda path=path: path.read_bytes(), file_name=path.name,
                                   key=f"engine-dl-{path.name}")
    if "gguf" in engines:
        st.caption(f"Ollama: put the Modelfile beside {engines['gguf']['modelfile']['from']} and run "
                   "`ollama create my-model -f Modelfile`; llama.cpp: `llama-cli -m <file>.gguf`.")


def _flat(data: dict, prefix: str = ""):
    for k, v in data.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float, str)):
            yield f"{prefix}{k}", v


def package_files(package: Path, run) -> None:
    manifest = activity.read_json(package / "manifest.json") or {}
    digests = {r["name"]: r["digest"] for r in manifest.get("predicate", {}).get("resources", [])}
    payload = package / "payload"
    rows = [{"file": p.relative_to(payload).as_posix(), "size": _size(p.stat().st_size),
             "sha256": digests.get(p.relative_to(payload).as_posix(), "(not in the manifest)")}
            for p in sorted(payload.rglob("*")) if p.is_file()]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption(f"{len(rows)} files; the manifest (in-toto statement) lists each digest; "
               + ("signed: see step 12." if (package / "signature.dsse.json").is_file() else "not signed."))


def package_view(package: Path, run) -> None:
    """The package's files, then the privacy budget its evidence carries (what the policy's max_epsilon reads)."""
    package_files(package, run)
    evidence = activity.read_json(package / "payload" / "evidence.json") or {}
    privacy = evidence.get("privacy") or {}
    st.markdown("**Privacy evidence** (`payload/evidence.json`, `privacy`)")
    if privacy.get("enabled"):
        privacy_report(privacy, run)
    else:
        st.caption("Trained without differential privacy: the evidence says so (`{\"enabled\": false}`), and a "
                   "policy with max_epsilon refuses it.")


def privacy_report(report: dict[str, Any], run) -> None:
    """A private run's budget (artifacts/privacy.json or the package's evidence), every figure the accounting used."""
    budget = f" of a budget of {report['target_epsilon']:g}" if report.get("target_epsilon") is not None else ""
    stopped = " Training stopped at the budget." if report.get("stopped_at_budget") else ""
    st.info(f"Differentially private: epsilon {report['epsilon']:.3f}{budget} at delta {report['delta']:.3g}, "
            f"{report['accountant']} accountant. Unit of privacy: one training example.{stopped}")
    rows = [("epsilon spent", f"{report['epsilon']:.4f}"), ("delta", f"{report['delta']:.3g}"),
            ("accountant", report["accountant"]), ("noise multiplier", f"{report['noise_multiplier']:.4f}"),
            ("per-example clip norm", f"{report['max_grad_norm']:g}"), ("sample rate q", f"{report['sample_rate']:.6f}"),
            ("steps", report["steps"]), ("training examples N", report["N"]),
            ("expected logical batch", report.get("logical_batch")), ("Poisson sampling", report["poisson"]),
            ("secure mode", report["secure_mode"]), ("per-example gradients", report.get("per_sample_gradients"))]
    st.table(_indexed([{"figure": k, "value": str(v)} for k, v in rows], "figure"))
    st.caption("Anyone can check epsilon: Opacus' accountant (`opacus.accountants`) stepped `steps` times with this "
               "noise multiplier and sample rate, asked at this delta, gives the same figure.")


def evaluation_and_privacy(report: dict[str, Any], run) -> None:
    """Step 8's results, with the privacy budget they were bought at first where the run trained privately."""
    privacy = activity.read_json(run.artifacts / "privacy.json")
    if privacy:
        with st.expander(f"Privacy: trained with differential privacy, epsilon {privacy['epsilon']:.3f} at delta "
                         f"{privacy['delta']:.3g}", expanded=True):
            privacy_report(privacy, run)
    evaluation(report, run)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def signature(report: dict[str, Any], run) -> None:
    (st.success if report.get("ok") else st.error)(
        "The package's signature verifies." if report.get("ok") else
        "The signature does NOT verify: " + "; ".join(report.get("reasons", [])))
    rows = [{"check": f"signature {name}", "result": "ok" if s["ok"] else "FAILED", "detail": s.get("detail", "")}
            for name, s in report.get("signatures", {}).items()]
    rows.append({"check": "manifest matches the signed envelope",
                 "result": "ok" if report.get("manifest_matches_envelope") else "FAILED", "detail": ""})
    for what in ("missing", "extra", "changed"):
        rows.append({"check": f"files {what}", "result": "ok" if not report.get(what) else "FAILED",
                     "detail": ", ".join(report.get(what) or [])})
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption(f"Key `{report.get('key_id', '')[:16]}...`, subject digest `{report.get('subject_digest', '')[:16]}...`")


def policy(report: dict[str, Any], run) -> None:
    (st.success if report.get("passed") else st.error)("Policy passed: promoted." if report.get("passed") else
                                                      "Policy refused the package.")
    st.dataframe([{"rule": r["name"], "result": "pass" if r["passed"] else "FAIL", "detail": r["detail"]}
                  for r in report.get("rules", [])], hide_index=True, width="stretch")


def evaluation(report: dict[str, Any], run) -> None:
    """Base against tuned: the metrics table, the task metric (confusion matrix and majority baseline for
    verdicts), the overfitting verdict, and the answers side by side."""
    b, t, name = report["base"], report["tuned"], report["task_metric"]
    rows = [("validation loss", b["val_loss"], t["val_loss"]), ("validation perplexity", b["val_ppl"], t["val_ppl"]),
            (name.replace("_", " "), b["task"]["value"], t["task"]["value"])]
    rows += [(m.replace("_", " "), b["generation"][m], t["generation"][m]) for m in b.get("generation", {})]
    general = report.get("general_text")
    if general:  # runs before 2026-12-04 did not measure it
        rows.append(("general-text perplexity", general["base_ppl"], general["tuned_ppl"]))
    st.table([{"metric": m, "base": f"{x:.4f}", "tuned": f"{y:.4f}", "change": f"{y - x:+.4f}"} for m, x, y in rows])
    if general:
        change = general["ratio"] - 1
        st.caption(f"General-text perplexity is measured on {general['text']}, text that is not the task: the tuned "
                   f"model's is {abs(change):.1%} {'higher' if change > 0 else 'lower'} than the base's (tuned / base "
                   f"= {general['ratio']:.3f}), a measure of how much plain language modelling the tuning cost.")
    answers = [a for a in _jsonl(run.artifacts / "eval" / "answers.jsonl") if a.get("reference")]
    if name == "verdict_accuracy" and answers:
        _verdicts(report, answers)
    curve = (report.get("update_compression") or {}).get("curve")
    if curve:  # step 7's sparse update, loaded back and measured on the validation split
        st.markdown("**Sparse update: size against validation loss**")
        st.table([{"k/d": "base (no update)" if p["ratio"] == 0 else p["ratio"], "file size": _size(p["bytes"]),
                   "validation loss": f"{p['val_loss']:.4f}"} for p in curve])
    over = report.get("overfitting")
    if over:
        (st.warning if over.get("overfitting") else st.info)(f"Overfitting: {over['verdict']}.")
    samples = _jsonl(run.artifacts / "eval" / "samples.jsonl")
    if samples:
        st.markdown("**Base and tuned answers, side by side**")
        if report.get("simulated"):
            st.caption("Simulation: both answers come from a tiny random model, so they are noise; a real run "
                       "(simulation off) shows what the tuned model says.")
        for i, sample in enumerate(samples):
            with st.container(border=True):
                st.markdown(f"**Prompt**: {sample['prompt'][-1]['content']}")
                if sample.get("reference"):
                    st.markdown(f"**Expected**: {sample['reference']}")
                left, right = st.columns(2)
                left.text_area("base", sample["base"] or "(empty answer)", disabled=True, key=f"eval-base-{i}")
                right.text_area("tuned", sample["tuned"] or "(empty answer)", disabled=True, key=f"eval-tuned-{i}")


def _verdicts(report: dict[str, Any], answers: list[dict]) -> None:
    """The decision against the majority-class baseline, per rule, and the confusion matrices (from the
    evaluation report; a report written before it carried them is measured here from its answers)."""
    from studio_core.evaluate.verdicts import LABELS, NO_VERDICT, headline, verdict_report

    def measured(side: str) -> dict[str, Any]:
        if "verdicts" in report[side]["task"]:
            return report[side]["task"]["verdicts"]
        prompts = ["\n".join(m["content"] for m in a["prompt"] if m["role"] == "user") for a in answers]
        return verdict_report(prompts, [a[side] or "" for a in answers], [a["reference"] for a in answers])

    sides = {side: measured(side) for side in ("base", "tuned")}
    tuned = sides["tuned"]
    (st.success if tuned["above_baseline"] else st.warning)(f"Tuned: {headline(tuned)}, on {tuned['rows']} "
                                                             "held-out rows.")
    rules = sorted(set(sides["base"]["per_rule"]) | set(tuned["per_rule"]))
    per_rule = [{"rule": rule.replace("_", " "), "rows": tuned["per_rule"].get(rule, {}).get("rows", 0),
                 "majority baseline": f"{tuned['per_rule'].get(rule, {}).get('majority_baseline', 0):.2f}",
                 "base": f"{sides['base']['per_rule'].get(rule, {}).get('accuracy', 0):.2f}",
                 "tuned": f"{tuned['per_rule'].get(rule, {}).get('accuracy', 0):.2f}",
                 "above baseline": "yes" if tuned["per_rule"].get(rule, {}).get("above_baseline") else "no"}
                for rule in rules]
    st.markdown("**Verdict accuracy per rule** (tuned; above baseline: binomial p < "
                f"{tuned['significance']:.2f})")
    st.table(_indexed(per_rule, "rule"))
    left, right = st.columns(2)
    for column, side in ((left, "base"), (right, "tuned")):
        table = [{"expected": expected, **sides[side]["confusion"][expected]} for expected in LABELS]
        column.markdown(f"Confusion matrix, **{side}** (rows: expected, columns: answered; "
                        f"'{NO_VERDICT}': the answer had none)")
        column.table(_indexed(table, "expected"))


def _jsonl(path: Path) -> list[dict]:
    from studio_core.runs import read_jsonl

    return read_jsonl(path)


def sparsification(report: dict[str, Any], run) -> None:
    """Step 7: bytes per step the gradient hook sent (or why it did not run), the shipped update's size and the
    size-vs-quality curve of the update (validation loss at each k/d)."""
    from app.charts import line_chart, update_curve_chart

    gradients, update = report["gradients"], report["update"]
    if gradients["used"]:
        st.markdown(f"**Gradients**: {gradients['method']} at k/d = {gradients['ratio']} on {gradients['processes']} "
                    f"processes: **{_size(gradients['bytes_per_step'])} per step** per process instead of "
                    f"{_size(gradients['dense_bytes_per_step'])} ({gradients['compression']}x less).")
        metrics = [m for m in run.metrics() if "comm_bytes" in m]
        figure = line_chart(metrics, "comm_bytes", "Bytes sent per step (per process)")
        figure.add_hline(y=gradients["dense_bytes_per_step"], line_dash="dot", annotation_text="uncompressed")
        figure.update_yaxes(rangemode="tozero")
        st.plotly_chart(figure, key="comm-bytes")
    else:
        st.info(f"Gradients: not compressed. {gradients['reason']}.")
    if not update.get("shipped"):
        st.info(f"Update: {update['reason']}.")
        return
    point = update["shipped_point"]
    st.markdown(f"**Shipped update** (`artifacts/{update['shipped']}`): k/d = {update['ratio']} of {update['layers']} "
                f"layers, {_size(point['bytes'])} against {_size(update['dense_bytes'])} dense; validation loss "
                f"{point['val_loss']:.4f}.")
    st.plotly_chart(update_curve_chart(update["curve"]), key="comm-curve")
    st.table([{"k/d": "base (no update)" if p["ratio"] == 0 else p["ratio"], "file size": _size(p["bytes"]),
               "validation loss": f"{p['val_loss']:.4f}"} for p in update["curve"]])
    st.caption(f"Each point: the update kept as its top-k entries per layer, written, loaded back onto the base and "
               f"measured on {update['val_rows']} validation rows in {update['precision']}. At k/d = 1 the file "
               "stores every entry with its index (about twice the dense size).")
