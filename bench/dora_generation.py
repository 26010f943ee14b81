"""Greedy generation through an unmerged DoRA adapter, with and without peft's `DoraCaching` (what step 8 uses).

Without the cache, every DoRA layer recomputes B @ A and the norm of W + B @ A at each decoding step; with it,
both are computed once per eval pass. The adapter is DoRA r=16 on every attention and MLP projection of the
embedded model, with its B matrices and magnitudes randomised (a fresh adapter's B is zero, which would hide
any error in the cached path). Both sides answer the same chat prompts, alternated over `--rounds`; the
answers must be identical. Prints the medians and the speed-up, writes bench/results/dora_generation.json.

    .venv/bin/python bench/dora_generation.py [--model embedded:smollm2-135m-instruct] [--prompts 8] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from studio_core.config import EMBEDDED_MODEL_REF

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL_REF)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from peft.helpers import DoraCaching

    from studio_core.data.demo import generate_legal_audit
    from studio_core.evaluate.basic import generate
    from studio_core.models.resolve import load_model, load_tokenizer, resolve_model
    from studio_core.runs import model_cache_dir, studio_home

    torch.manual_seed(0)
    resolved = resolve_model(args.model, model_cache_dir(studio_home()))
    tokenizer = load_tokenizer(resolved)
    model = get_peft_model(load_model(resolved), LoraConfig(
        r=16, lora_alpha=32, use_dora=True, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.05 * torch.randn_like(p))
    prompts = [[{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"}]
               for r in generate_legal_audit(args.prompts, seed=7)]

    seconds: dict[str, list[float]] = {"uncached": [], "DoraCaching": []}
    answers: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for side in seconds:
            start = time.perf_counter()
            if side == "DoraCaching":
                with DoraCaching():
                    answers[side] = generate(model, tokenizer, prompts, args.tokens)
            else:
                answers[side] = generate(model, tokenizer, prompts, args.tokens)
            seconds[side].append(time.perf_counter() - start)
    same = answers["uncached"] == answers["DoraCaching"]
    medians = {side: statistics.median(s) for side, s in seconds.items()}
    speedup = medians["uncached"] / medians["DoraCaching"]
    print(f"DoRA greedy generation, {args.prompts} prompts x {args.tokens} new tokens, {args.model}, "
          f"median of {args.rounds} alternated rounds")
    print(f"{'variant':<14}{'seconds':>10}")
    for side, median in medians.items():
        print(f"{side:<14}{median:>10.2f}")
    print(f"speed-up with DoraCaching: {speedup:.2f}x; identical answers: {same}")
    out = ROOT / "bench" / "results" / "dora_generation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "prompts": args.prompts, "tokens": args.tokens,
                               "rounds": seconds, "median_s": medians, "speedup": speedup,
                               "identical_answers": same}, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
