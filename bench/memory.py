"""The training-memory estimator (studio_core.hardware.memory) vs the measured peak of real training steps.

For each config of a grid on the embedded model (method x batch x seq x gradient checkpointing) a fresh
process imports everything, records its RSS right before loading the model (the baseline; the kernel's
high-water mark is reset there through /proc/self/clear_refs, so ru_maxrss covers only what follows), loads
the base (fp32 for LoRA, nf4 through the studio's own loader for QLoRA), applies the adapter with the
studio's `apply_method`, and runs a few real training steps (forward with labels, backward, AdamW step,
zero_grad) on a random-token batch, in fp32 as a CPU run without bf16 would. Measured = peak RSS (ru_maxrss)
minus the baseline: on CPU "device memory" is the process's resident memory. The same process reports the
model facts, and the estimate is what pre-flight computes from them. Prints the table (estimate per
component, measured, ratio), writes bench/results/memory.json, exits 1 if a ratio is outside [0.75, 1.25].

    .venv/bin/python bench/memory.py [--model REF] [--steps 3] [--quick]
    .venv/bin/python bench/memory.py --one '{"method": "lora", "batch": 4, "seq": 256, "gc": false}'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "memory.json"
TOLERANCE = (0.75, 1.25)
MIB = 1024**2
# QLoRA trains ~3x slower on CPU (bitsandbytes dequantizes every 4-bit weight on each pass): fewer shapes.
SHAPES = {"lora": ((1, 256), (4, 256), (2, 512), (4, 512)), "qlora": ((1, 256), (2, 512))}
GRID = [(method, batch, seq, gc) for method, shapes in SHAPES.items() for batch, seq in shapes for gc in (False, True)]
QUICK_GRID = [(m, b, s, gc) for m, b, s, gc in GRID if b * s <= 1024]


def _proc_status(field: str) -> int:
    """A `kB` field of /proc/self/status, in bytes (0 where the field or the file is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM, which ru_maxrss reads) to the current RSS; False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _method_section(name: str):
    """The studio's method config section for `name` (the section API, or the older MethodConfig)."""
    from studio_core import config

    if hasattr(config, "method_config"):
        return config.method_config(name)
    return config.MethodConfig(name=name)


def measure_one(spec: dict) -> dict:
    """Runs in a fresh process: load, adapt, train `steps` steps; peak RSS over the pre-load baseline."""
    import gc
    import resource

    import psutil
    import torch

    from studio_core.hardware.memory import model_shape
    from studio_core.models.resolve import load_model, resolve_model
    from studio_core.models.targets import default_target_modules
    from studio_core.runs import model_cache_dir, studio_home
    from studio_core.methods import get_method
    from studio_core.train.adapters import apply_method, count_parameters

    torch.manual_seed(0)
    resolved = resolve_model(spec["model"], model_cache_dir(studio_home()))  # digests the weights: before the baseline
    section = _method_section(spec["method"])
    gc.collect()
    process = psutil.Process()
    reset = _reset_peak()
    baseline = process.memory_info().rss
    maxrss_at_baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()

    model = load_model(resolved, quantize_4bit=get_method(spec["method"]).loads_in_4bit, compute_dtype="fp32")
    _, base_params = count_parameters(model)
    shape = model_shape(model.config)
    model = apply_method(model, section, default_target_modules(model))
    adapter_params, _ = count_parameters(model)
    if spec["gc"]:  # as the studio's trainer does (Trainer(activation_checkpointing=True))
        model.enable_input_require_grads()
        model.activation_checkpointing_enable()
    gc.collect()
    loaded = process.memory_info().rss
    load_peak = _proc_status("VmHWM")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    losses = []
    for _ in range(spec["steps"]):
        ids = torch.randint(shape["vocab"], (spec["batch"], spec["seq"]))
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "spec": spec, "seconds": round(time.perf_counter() - start, 1), "losses": losses,
        "baseline_mib": round(baseline / MIB, 1), "peak_reset": reset,
        "import_peak_above_baseline": (not reset) and maxrss_at_baseline > baseline,
        "measured_mib": round((peak - baseline) / MIB, 1), "after_load_mib": round((loaded - baseline) / MIB, 1),
        "load_peak_mib": round((load_peak - baseline) / MIB, 1) if load_peak else None,
        "rss_file_mib_at_end": round(_proc_status("RssFile") / MIB, 1),
        "base_params": base_params, "adapter_params": adapter_params,
        "adapter_dropout": float(getattr(section, "dropout", 0.0)), "shape": shape,
    }


def run_child(spec: dict) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], check=False, capture_output=True,
                         text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"child {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def estimate(result: dict):
    """What pre-flight estimates for this config (the same call check_memory makes)."""
    from studio_core.hardware.memory import estimate_training_memory

    spec = result["spec"]
    return estimate_training_memory(
        base_params=result["base_params"], adapter_params=result["adapter_params"], **result["shape"],
        batch=spec["batch"], seq_len=spec["seq"], weight_format="nf4" if spec["method"] == "qlora" else "fp32",
        compute="fp32", gradient_checkpointing=spec["gc"], adapter_dropout=result["adapter_dropout"] > 0,
        device="cpu",
    )


def table(rows: list[dict]) -> str:
    head = (f"{'method':7}{'batch':>6}{'seq':>5}{'ckpt':>5} | {'weights':>8}{'adapter':>8}{'optim':>7}{'grads':>7}"
            f"{'acts':>7}{'logits':>7}{'alloc':>7}{'est':>7} | {'measured':>8}{'ratio':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        e, s = r["estimate_gib"], r["spec"]
        lines.append(
            f"{s['method']:7}{s['batch']:>6}{s['seq']:>5}{'on' if s['gc'] else 'off':>5} | {e['weights']:8.3f}"
            f"{e['adapter']:8.3f}{e['optimizer']:7.3f}{e['gradients']:7.3f}{e['activations']:7.3f}{e['logits']:7.3f}"
            f"{e['allocator']:7.3f}{e['total']:7.3f} | {r['measured_gib']:8.3f}{r['ratio']:7.3f}"
            f"{'' if r['ok'] else '  <-- outside'}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the configs of <= 1024 tokens per batch")
    parser.add_argument("--one", help="measure one config (JSON) in this process and print the result")
    args = parser.parse_args()
    if args.one:
        spec = {"model": args.model, "steps": args.steps, **json.loads(args.one)}
        print(json.dumps(measure_one(spec)))
        return 0

    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    rows = []
    for method, batch, seq, gc in QUICK_GRID if args.quick else GRID:
        spec = {"model": args.model, "method": method, "batch": batch, "seq": seq, "gc": gc, "steps": args.steps}
        result = run_child(spec)
        est = estimate(result)
        measured = result["measured_mib"] * MIB
        ratio = est.total / measured
        result.update(estimate_gib=est.as_gib(), measured_gib=round(measured / 1024**3, 3), ratio=round(ratio, 3),
                      ok=TOLERANCE[0] <= ratio <= TOLERANCE[1])
        rows.append(result)
        print(f"  {method} batch {batch} seq {seq} checkpointing {'on' if gc else 'off'}: estimate "
              f"{est.total / 1024**3:.3f} GiB, measured {result['measured_gib']:.3f} GiB, ratio {ratio:.3f} "
              f"({result['seconds']:.0f} s)", flush=True)
    elapsed = time.perf_counter() - started
    failed = [r for r in rows if not r["ok"]]
    print(f"\nmodel {args.model}, fp32 compute, {args.steps} training steps per config, one fresh process each; "
          f"GiB; measured = peak RSS over the pre-load baseline; ratio = estimate / measured "
          f"(target {TOLERANCE[0]}-{TOLERANCE[1]})")
    print(table(rows))
    ratios = [r["ratio"] for r in rows]
    print(f"ratios {min(ratios):.3f}-{max(ratios):.3f}; {len(rows) - len(failed)}/{len(rows)} within target; "
          f"{elapsed:.0f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "model": args.model, "steps": args.steps, "tolerance": TOLERANCE, "seconds": round(elapsed, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "rows": rows,
        "ratio_range": [min(ratios), max(ratios)], "passed": not failed,
    }, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
