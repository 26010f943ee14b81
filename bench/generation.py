"""Generation speed on CPU: PyTorch eager with its KV cache (the baseline) against step 10's engines that generate.

8 chat prompts x 64 new tokens, batch 1, greedy, 2 threads everywhere. For each prompt every engine runs once, in
an order that rotates prompt by prompt (alternated, so a change in the machine's load falls on every engine).
Reported per engine: decode tokens/s (tokens 2..64 over the time after the first), time to first token (prefill
+ first step), the ratio of decode speed to PyTorch's, model file size, and teacher-forced top-1 agreement with
the fp32 model: each prompt plus PyTorch fp32's own 64-token continuation goes through the engine in one pass,
and its next-token choice is compared with fp32's at each of the 64 positions (512 in all).

Engines: `onnx_kv` int4 and int8 (onnxruntime-genai's builder; int8 both at accuracy level 4, int8 compute,
the CPU default, and level 1, fp32 compute), and llama.cpp on the GGUF (q8_0, q4_0) where llama-cpp-python is
installed (an optional extra: `pip install llama-cpp-python`, a source build). Beside each engine the table shows
model file bytes / memory bandwidth (a numpy copy, measured here) as "size-bound tokens/s": the decode speed if
every byte of the file were read once per token. It is a reference, not a ceiling: a decode step reads only one
row of the token-embedding table (SmolLM2's int8 model decodes faster than its size-bound), and a copy of one
buffer is not the best bandwidth the cores reach.

    .venv/bin/python bench/generation.py [--merged RUN/artifacts/merged] [--work DIR] [--threads 2] [--tokens 64]

Without --merged it uses the embedded SmolLM2-135M-Instruct's converted folder (the base model: what a merged
model of it costs to run). --work keeps the built engines between runs. Writes bench/results/generation.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPTS = [
    "What is the capital of France?",
    "Explain in one sentence what a limitation of liability clause does.",
    "Write a haiku about the sea.",
    "List three prime numbers greater than ten.",
    "Is this clause compliant? 'The supplier may share customer data with any third party.'",
    "Translate 'good morning' into German.",
    "Summarise: the supplier must notify the customer of a data breach within 72 hours.",
    "What does ONNX stand for?",
]
# name: (precision, builder options). accuracy_level: MatMulNBits' compute type, 4 int8 (the CPU default), 3 bf16,
# 1 fp32.
ORT_VARIANTS = {"ort-int4": ("int4", {}), "ort-int8": ("int8", {}), "ort-int8-bf16compute": ("int8", {"accuracy_level": "3"}),
                "ort-int8-fp32compute": ("int8", {"accuracy_level": "1"}), "ort-fp32": ("fp32", {})}
DEFAULT_VARIANTS = ["ort-int4", "ort-int8", "ort-int8-bf16compute", "ort-fp32"]


def embedded_folder() -> Path:
    from studio_core.models.embedded import ensure_embedded
    from studio_core.runs import model_cache_dir, studio_home

    return ensure_embedded("smollm2-135m-instruct", model_cache_dir(studio_home()))


def memory_bandwidth_gbs() -> float:
    """Best of 5 copies of a 256 MiB array: read + write bytes per second (a STREAM-like copy)."""
    import numpy as np

    src = np.ones(32 * 2**20, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def prompt_ids(tokenizer) -> list[list[int]]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False) for p in PROMPTS]


class TorchEngine:
    name = "pytorch-eager"

    def __init__(self, folder: Path, threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))

    def generate(self, ids: list[int], tokens: int) -> tuple[list[int], list[float]]:
        from transformers import StoppingCriteria

        torch = self.torch
        stamps: list[float] = []

        class Stamp(StoppingCriteria):  # called once per generated token, right after it is chosen
            def __call__(self, input_ids, scores, **kwargs):
                stamps.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        start = time.perf_counter()
        with self.torch.no_grad():
            out = self.model.generate(self.torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens,
                                      do_sample=False, use_cache=True, stopping_criteria=[Stamp()],
                                      pad_token_id=0)
        return out[0, len(ids):].tolist(), [start, *stamps]

    def next_tokens(self, ids: list[int]):
        with self.torch.no_grad():
            return self.model(self.torch.tensor([ids])).logits[0].argmax(-1).tolist()


class OrtEngine:
    def __init__(self, name: str, folder: Path, threads: int):
        import onnxruntime_genai as og

        self.name, self.og = name, og
        config = json.loads((folder / "genai_config.json").read_text())
        config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
        config["model"]["decoder"]["session_options"]["inter_op_num_threads"] = 1
        (folder / "genai_config.json").write_text(json.dumps(config, indent=4))
        self.model = og.Model(str(folder))
        self.size = sum(p.stat().st_size for p in folder.glob("model.onnx*"))

    def generate(self, ids: list[int], tokens: int) -> tuple[list[int], list[float]]:
        import numpy as np

        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(ids) + tokens, min_length=len(ids) + tokens)
        start = time.perf_counter()
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(np.array(ids, dtype=np.int32))
        out, stamps = [], [start]
        while not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
            stamps.append(time.perf_counter())
        return out, stamps

    def next_tokens(self, ids: list[int]):
        from studio_core.export.onnx_kv import prompt_logits

        return prompt_logits(self.model, ids).argmax(-1).tolist()


class LlamaCppEngine:
    def __init__(self, name: str, gguf: Path, threads: int):
        from llama_cpp import Llama

        self.name = name
        self.model = Llama(str(gguf), n_ctx=512, n_threads=threads, n_threads_batch=threads, logits_all=True,
                           verbose=False)
        self.size = gguf.stat().st_size

    def generate(self, ids: list[int], tokens: int) -> tuple[list[int], list[float]]:
        self.model.reset()
        start, out, stamps = time.perf_counter(), [], []
        for token in self.model.generate(ids, temp=0.0, top_k=1, reset=True):
            out.append(int(token))
            stamps.append(time.perf_counter())
            if len(out) == tokens:
                break
        return out, [start, *stamps]

    def next_tokens(self, ids: list[int]):
        import numpy as np

        self.model.reset()
        self.model.eval(ids)
        return np.asarray(self.model.scores[: len(ids)]).argmax(-1).tolist()


def build_engines(folder: Path, work: Path, threads: int, variants: list[str]) -> list:
    from studio_core.export.onnx_kv import build_onnx_kv

    engines = []
    for name in variants:
        precision, options = ORT_VARIANTS[name]
        out = work / name
        if not (out / "genai_config.json").is_file():
            print(f"building {name} ...", flush=True)
            build_onnx_kv(folder, out, precision, options)
        engines.append(OrtEngine(name, out, threads))
    if importlib.util.find_spec("llama_cpp") is not None:
        from studio_core.export.gguf import export_gguf

        for quant in ("q8_0", "q4_0"):
            path = work / "gguf" / f"model-{quant}.gguf"
            if not path.is_file():
                print(f"writing {path.name} ...", flush=True)
                export_gguf(folder, work / "gguf", [quant], "smollm")
            engines.append(LlamaCppEngine(f"llama.cpp-{quant}", path, threads))
    else:
        print("llama.cpp: llama-cpp-python is not installed; its rows are left out", flush=True)
    return engines


def run(folder: Path, work: Path, threads: int, tokens: int, variants: list[str]) -> dict:
    from transformers import AutoTokenizer

    os.environ["OMP_NUM_THREADS"] = str(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prompts = prompt_ids(tokenizer)
    baseline = TorchEngine(folder, threads)
    engines = [baseline, *build_engines(folder, work, threads, variants)]
    for engine in engines:
        engine.generate(prompts[0], 4)  # warm-up
    timings = {e.name: {"ttft": [], "decode": [], "agree": 0, "positions": 0} for e in engines}
    reference = []
    for i, ids in enumerate(prompts):
        order = engines[i % len(engines):] + engines[: i % len(engines)]
        for engine in order:
            out, stamps = engine.generate(ids, tokens)
            if engine is baseline:
                reference.append(out)
            timings[engine.name]["ttft"].append(stamps[1] - stamps[0])
            timings[engine.name]["decode"].append((len(stamps) - 2) / (stamps[-1] - stamps[1]))
    for ids, continuation in zip(prompts, reference):
        full = ids + continuation
        expected = baseline.next_tokens(full)[len(ids) - 1: len(full) - 1]
        for engine in engines:
            got = engine.next_tokens(full)[len(ids) - 1: len(full) - 1]
            timings[engine.name]["agree"] += sum(a == b for a, b in zip(expected, got))
            timings[engine.name]["positions"] += len(expected)
    return summarise(engines, timings, memory_bandwidth_gbs(), threads, tokens)


def summarise(engines, timings, bandwidth: float, threads: int, tokens: int) -> dict:
    import statistics

    base = statistics.median(timings[engines[0].name]["decode"])
    rows = []
    for engine in engines:
        t = timings[engine.name]
        decode = statistics.median(t["decode"])
        rows.append({"engine": engine.name, "decode_tokens_per_s": round(decode, 2),
                     "ratio_to_pytorch": round(decode / base, 2), "ttft_ms": round(1000 * statistics.median(t["ttft"]), 1),
                     "top1_agreement": round(t["agree"] / t["positions"], 4), "positions": t["positions"],
                     "model_mib": round(engine.size / 2**20, 1),
                     "size_bound_tokens_per_s": round(bandwidth * 1e9 / engine.size, 1)})
    return {"threads": threads, "prompts": len(PROMPTS), "new_tokens": tokens, "batch": 1,
            "memory_bandwidth_gbs": round(bandwidth, 2), "load_average": os.getloadavg(), "rows": rows}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"generation: {result['prompts']} prompts x {result['new_tokens']} tokens, batch 1, "
                        f"{result['threads']} threads; load average {result['load_average'][0]:.1f}")
    columns = ("engine", "decode_tokens_per_s", "ratio_to_pytorch", "ttft_ms", "top1_agreement", "model_mib",
               "size_bound_tokens_per_s")
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in result["rows"]:
        table.add_row(*(str(row[c]) for c in columns))
    Console(width=160).print(table)
    print(f"memory bandwidth (numpy copy): {result['memory_bandwidth_gbs']} GB/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--merged", type=Path, help="A merged model folder (default: the embedded SmolLM2).")
    parser.add_argument("--work", type=Path, help="Keep the built engines here between runs.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--ort", nargs="*", default=DEFAULT_VARIANTS, choices=list(ORT_VARIANTS),
                        help=f"ONNX Runtime GenAI variants (default: {' '.join(DEFAULT_VARIANTS)}; "
                        "ort-int8-fp32compute decodes slower than PyTorch here, so it is opt-in).")
    args = parser.parse_args()
    folder = args.merged or embedded_folder()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        result = {"model": str(folder.name), **run(folder, work, args.threads, args.tokens, args.ort)}
    print_table(result)
    out = ROOT / "bench" / "results" / "generation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
