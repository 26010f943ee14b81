"""GPU check for a lent device (a program, not a pytest test): LoRA/QLoRA training, unsloth vs transformers+peft.

    PYTHONPATH=. python3 tests/gpu/check_unsloth.py [--model FOLDER] [--steps 30] [--qlora] [--batch-size 8]
        [--seq-len 512] [--rank 16] [--gradient-checkpointing] [--out FILE.json]

Prints the backend status first (cuda, unsloth, bitsandbytes) and the studio's backend choice for LoRA. Without
--model it builds a small random Llama (vocab 32000, hidden 512, 4 layers) with plain transformers and the
studio's byte tokenizer, so it needs no download. It then trains N steps of LoRA (and QLoRA with --qlora) with the
standard path (fp32 weights under bf16 autocast, as the studio trains; nf4 base for QLoRA) and with unsloth
(studio_core.train.backends.load_with_unsloth, bf16), on the same seeded random-token batches, each run in its own
process (unsloth patches transformers when it loads a model, and peak memory must start from zero). Prints a table
of tokens/s (after warm-up steps), peak CUDA memory (torch.cuda.max_memory_allocated) and first/final loss, and the
unsloth/standard speedup per method.
Exit status: 0 every run finished with a finite loss; 1 a run failed or its loss is not finite; 3 unsloth is not
usable here (the reason is printed: it is not installed, or there is no CUDA GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDARD, UNSLOTH = "transformers+peft", "unsloth"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEVICE = "cuda:0"
RESULT = "RESULT "


def small_llama(folder: Path) -> Path:
    """A random Llama with a real vocabulary size (32000), hidden 512, 4 layers, and a byte tokenizer beside it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from studio_core.models.tiny import build_byte_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    build_byte_tokenizer().save_pretrained(folder)
    return folder


def batches(vocab_size: int, steps: int, batch_size: int, seq_len: int, seed: int) -> list:
    """The same random-token batches for every run: drawn on the CPU from a seeded generator."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator) for _ in range(steps)]


def load_standard(args: argparse.Namespace):
    """The studio's standard path: transformers + peft, fp32 weights (nf4 base for QLoRA)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from studio_core.models.resolve import nf4_config

    kwargs = {"dtype": torch.float32, "device_map": DEVICE, "use_safetensors": True}
    if args.method == "qlora":
        kwargs["quantization_config"] = nf4_config("bf16")
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    if args.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    elif args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=TARGETS,
                        bias="none", task_type=TaskType.CAUSAL_LM)
    return get_peft_model(model, config)


def load_unsloth(args: argparse.Namespace):
    """The unsloth path, through the studio's own loader (imports unsloth before transformers)."""
    from studio_core.train.backends import load_with_unsloth

    model, _ = load_with_unsloth(args.model, load_in_4bit=args.method == "qlora", max_seq_length=args.seq_len,
                                 dtype="bf16", r=args.rank, alpha=2 * args.rank, dropout=0.0,
                                 target_modules=TARGETS, seed=args.seed,
                                 gradient_checkpointing=args.gradient_checkpointing)
    return model


def train(model, inputs: list, warmup: int, lr: float) -> dict:
    """Plain AdamW steps under bf16 autocast; tokens/s counts the steps after `warmup` (compilation, autotune)."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    losses, start = [], time.perf_counter()
    for step, ids in enumerate(inputs):
        if step == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        ids = ids.to(DEVICE)
        with torch.autocast(DEVICE.split(":")[0], dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    timed = inputs[warmup:]
    tokens = sum(ids.numel() for ids in timed)
    return {"tokens_per_s": tokens / elapsed if timed else None, "timed_steps": len(timed),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 1024**3,
            "first_loss": float(losses[0]), "final_loss": float(losses[-1])}


def worker(args: argparse.Namespace) -> int:
    """One run (backend x method) in this process; prints one RESULT line of JSON."""
    vocab = json.loads((Path(args.model) / "config.json").read_text())["vocab_size"]
    model = (load_unsloth if args.worker == UNSLOTH else load_standard)(args)
    result = train(model, batches(vocab, args.steps, args.batch_size, args.seq_len, args.seed), args.warmup, args.lr)
    print(RESULT + json.dumps(result), flush=True)
    return 0


def run_one(args: argparse.Namespace, backend: str, method: str, model: Path) -> dict:
    """Run one backend x method in a child process; a crash or a missing result is a failed row, not an exception."""
    command = [sys.executable, __file__, "--worker", backend, "--method", method, "--model", str(model),
               *(f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("steps", "warmup", "batch_size", "seq_len",
                                                                        "rank", "seed", "lr"))]
    if args.gradient_checkpointing:
        command.append("--gradient-checkpointing")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    row = {"backend": backend, "method": method}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {args.timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
        return {**row, "error": f"exit {done.returncode}: " + "\n".join(tail)}
    result = {**row, **json.loads(lines[-1][len(RESULT):])}
    if not all(math.isfinite(result[k]) for k in ("first_loss", "final_loss")):
        result["error"] = f"loss is not finite: {result['final_loss']}"
    return result


def _cell(value, width: int, digits: int) -> str:
    return "-".rjust(width) if value is None else f"{value:{width}.{digits}f}"


def print_table(rows: list[dict]) -> None:
    """backend, method, tokens/s, peak memory, losses; failures below; then the unsloth/standard ratios."""
    print(f"{'method':<7} {'backend':<18} {'tokens/s':>10} {'peak GiB':>9} {'first loss':>10} {'final loss':>10}")
    for r in rows:
        print(f"{r['method']:<7} {r['backend']:<18} {_cell(r.get('tokens_per_s'), 10, 0)} "
              f"{_cell(r.get('peak_memory_gib'), 9, 3)} {_cell(r.get('first_loss'), 10, 4)} "
              f"{_cell(r.get('final_loss'), 10, 4)}" + ("  FAILED" if r.get("error") else ""))
    for r in rows:
        if r.get("error"):
            print(f"FAILED {r['method']} {r['backend']}: {r['error']}")
    for method in dict.fromkeys(r["method"] for r in rows):
        pair = {r["backend"]: r for r in rows if r["method"] == method and not r.get("error")}
        if len(pair) == 2:
            speedup = pair[UNSLOTH]["tokens_per_s"] / pair[STANDARD]["tokens_per_s"]
            memory = pair[UNSLOTH]["peak_memory_gib"] / pair[STANDARD]["peak_memory_gib"]
            # Same weights, data and zero-initialised LoRA B: step 0's loss should agree up to bf16 rounding.
            drift = abs(pair[UNSLOTH]["first_loss"] - pair[STANDARD]["first_loss"]) / pair[STANDARD]["first_loss"]
            print(json.dumps({"method": method, "speedup_unsloth_over_standard": round(speedup, 3),
                              "peak_memory_ratio_unsloth_over_standard": round(memory, 3),
                              "first_loss_relative_difference": round(drift, 5)}))
            if drift > 0.02:
                print(f"warning: {method} step-0 losses differ by {drift:.1%}: the two paths may not compute the same")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LoRA/QLoRA training speed on a lent GPU: unsloth vs transformers+peft")
    parser.add_argument("--model", type=Path, help="an HF model folder with a tokenizer (default: a small random Llama)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of tokens/s (default 3)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank; alpha is twice it")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qlora", action="store_true", help="also run QLoRA (nf4 base, needs bitsandbytes)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on for both backends")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per run (default 300)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--worker", choices=[STANDARD, UNSLOTH], help=argparse.SUPPRESS)
    parser.add_argument("--method", default="lora", choices=["lora", "qlora"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error(f"--warmup {args.warmup} must be at least 0 and below --steps {args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from studio_core.catalog import backend_status
    from studio_core.train.backends import UNSLOTH as CHOSEN_UNSLOTH
    from studio_core.train.backends import choose_backend

    status = {name: backend_status(name) for name in ("cuda", "unsloth", "bitsandbytes")}
    print(json.dumps({name: {"available": s.available, "version": s.version, "reason": s.reason}
                      for name, s in status.items()}))
    choice = choose_backend("lora")
    print(json.dumps({"backend_choice": choice.as_dict()}))
    if choice.name != CHOSEN_UNSLOTH:
        print(f"unsloth is not usable here: {choice.reason}")
        return 3
    model = args.model or small_llama(Path(tempfile.mkdtemp(prefix="gpu-check-unsloth-")) / "model")
    methods = ["lora", "qlora"] if args.qlora else ["lora"]
    rows = [run_one(args, backend, method, model) for method in methods for backend in (STANDARD, UNSLOTH)]
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
