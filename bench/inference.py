"""Dense PyTorch vs the exported ONNX (ONNX Runtime) and the compiled model: latency, throughput, size, memory.

Every variant answers the same chat prompts with one forward pass over the prompt (the logits graph the
studio exports has no KV cache, so this is prefill, the same work on every side). Each variant runs in its own
process, so peak RSS is its own; the PyTorch side imports no studio code, the ONNX sides import only
onnxruntime and numpy. Latency p50/p95 at batch 1 over every prompt; throughput in sequences/s at a larger
batch (right-padded with an attention mask). Same thread count everywhere. Prints a table with the ratios to
PyTorch and writes bench/results/inference.json.

    .venv/bin/python bench/inference.py [--merged RUN/artifacts/merged] [--work DIR] [--batch 8] [--repeats 5]

Without --merged it uses the embedded SmolLM2-135M-Instruct's converted folder. --work keeps the export and
the compiled models between runs (the 135 M export takes about 100 s); without it they go to a temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from child import run_child  # bench/child.py

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "What is the capital of France?",
    "Explain in one sentence what a limitation of liability clause does.",
    "Write a haiku about the sea.",
    "List three prime numbers greater than ten.",
    "How many days is a thirty-day notice period in weeks, roughly?",
    "Translate 'good morning' into German.",
    "Summarise: the supplier must notify the customer of a data breach within 72 hours.",
    "What does ONNX stand for?",
]

RUNNER = r'''
import json, sys, time
import numpy as np
def peak_rss_mb():
    # VmHWM is this process's own peak (ru_maxrss carries the parent's over fork and exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
kind, path, inputs_file, batch, repeats, threads = sys.argv[1:7]
batch, repeats, threads = int(batch), int(repeats), int(threads)
rows = json.load(open(inputs_file))
def padded(chunk):
    width = max(len(r) for r in chunk)
    ids = np.array([r + [0] * (width - len(r)) for r in chunk], dtype=np.int64)
    return ids, np.array([[1] * len(r) + [0] * (width - len(r)) for r in chunk], dtype=np.int64)
start = time.perf_counter()
if kind == "torch":
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval()
    def forward(ids, mask):
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), use_cache=False).logits
else:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    def forward(ids, mask):
        return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
load_s = time.perf_counter() - start
forward(*padded(rows[:1]))  # warm-up
latencies = []
for _ in range(repeats):
    for row in rows:
        t = time.perf_counter(); forward(*padded([row])); latencies.append(time.perf_counter() - t)
chunks = [rows[i:i + batch] for i in range(0, len(rows), batch)]
forward(*padded(chunks[0]))
t = time.perf_counter()
for _ in range(repeats):
    for chunk in chunks:
        forward(*padded(chunk))
throughput = repeats * len(rows) / (time.perf_counter() - t)
print(json.dumps({"p50_ms": 1000 * float(np.percentile(latencies, 50)), "p95_ms": 1000 * float(np.percentile(latencies, 95)),
                  "throughput_seq_s": throughput, "load_s": load_s,
                  "peak_rss_mb": peak_rss_mb()}))
'''


def default_merged() -> Path:
    from studio_core.models.resolve import resolve_model
    from studio_core.runs import model_cache_dir, studio_home

    return resolve_model("embedded:smollm2-135m-instruct", model_cache_dir(studio_home())).path


def prompt_tokens(merged: Path, batch: int) -> list[list[int]]:
    """The prompts through the model's chat template, repeated to fill at least two batches."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    rows = [list(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)) for p in PROMPTS]
    return (rows * (1 + 2 * batch // len(rows)))[: max(len(rows), 2 * batch)]


def prepare(merged: Path, work: Path) -> tuple[dict, dict]:
    """Export and compile (fp32 optimized, int8 weight-only and int8 dynamic) once per --work folder."""
    from studio_core.export.compile import compile_model
    from studio_core.export.onnx import export_onnx

    reports = {}
    for name, make in (("export", lambda: export_onnx(merged, work / "onnx")),
                       ("compile", lambda: compile_model(work / "onnx", work / "engine", backend="onnxruntime")),
                       ("compile_int8", lambda: compile_model(work / "onnx", work / "engine-int8", int8=True,
                                                              backend="onnxruntime", int8_scheme="weight_only")),
                       ("compile_int8_dynamic", lambda: compile_model(
                           work / "onnx", work / "engine-int8-dynamic", int8=True, backend="onnxruntime",
                           int8_scheme="dynamic"))):
        record = work / f"{name}.json"
        if not record.is_file():
            record.write_text(json.dumps(make(), indent=2))
        reports[name] = json.loads(record.read_text())
    variants = {"pytorch (dense, eager)": ("torch", merged, _size(merged, ("*.safetensors",))),
                "onnx (onnxruntime)": ("ort", work / "onnx" / "model.onnx", _size(work / "onnx", ("model.onnx*",))),
                f"compiled ({reports['compile']['engine']})": ("ort", work / "engine" / "model.onnx",
                                                               _size(work / "engine", ("model.onnx*",))),
                "compiled int8 weight-only (onnxruntime)": ("ort", work / "engine-int8" / "model.int8.onnx",
                                                            _size(work / "engine-int8", ("model.int8.onnx*",))),
                "compiled int8 dynamic (onnxruntime)": ("ort", work / "engine-int8-dynamic" / "model.int8.onnx",
                                                        _size(work / "engine-int8-dynamic", ("model.int8.onnx*",)))}
    return variants, reports


def _size(folder: Path, patterns: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for pattern in patterns for p in folder.glob(pattern))


def measure(kind: str, path: Path, inputs: Path, args) -> dict:
    return run_child(RUNNER, [kind, str(path), str(inputs), str(args.batch), str(args.repeats), str(args.threads)],
                     what=f"{kind} runner on {path}")


def table(rows: dict[str, dict], batch: int) -> str:
    base = next(iter(rows.values()))
    header = (f"{'variant':44} {'p50 ms':>8} {'p95 ms':>8} {'x lat':>6} {'seq/s b' + str(batch):>10} {'x thr':>6} "
              f"{'size MB':>8} {'size %':>7} {'RSS MB':>8}")
    lines = [header]
    for name, r in rows.items():
        lines.append(f"{name:44} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {base['p50_ms'] / r['p50_ms']:6.2f} "
                     f"{r['throughput_seq_s']:10.1f} {r['throughput_seq_s'] / base['throughput_seq_s']:6.2f} "
                     f"{r['size_bytes'] / 1e6:8.1f} {100 * r['size_bytes'] / base['size_bytes']:6.0f}% "
                     f"{r['peak_rss_mb']:8.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--merged", type=Path, help="a merged model folder (a run's artifacts/merged)")
    parser.add_argument("--work", type=Path, help="keep the export and compiled models here between runs")
    parser.add_argument("--batch", type=int, default=8, help="batch size for the throughput figure")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the prompts per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads, every side")
    args = parser.parse_args()
    merged = args.merged or default_merged()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-inference-"))
    work.mkdir(parents=True, exist_ok=True)
    variants, reports = prepare(merged, work)
    inputs = work / "prompts.json"
    inputs.write_text(json.dumps(prompt_tokens(merged, args.batch)))
    rows = {name: {**measure(kind, path, inputs, args), "size_bytes": size} for name, (kind, path, size) in
            variants.items()}
    print(table(rows, args.batch))
    for name in ("compile_int8", "compile_int8_dynamic"):
        cost = reports[name]["accuracy"]["int8_vs_onnx"]
        print(f"{reports[name]['precision']}: relative logit error {cost['relative_error']:.3f}, "
              f"top-1 agreement {cost['top1_agreement']:.3f} against the fp32 ONNX")
    out = ROOT / "bench" / "results" / "inference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(merged), "args": {k: str(v) for k, v in vars(args).items()},
                               "prompts": len(PROMPTS), "results": rows, "export": reports["export"],
                               "compile": reports["compile"], "compile_int8": reports["compile_int8"],
                               "compile_int8_dynamic": reports["compile_int8_dynamic"]}, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
