"""Step 5, Pruning Aware Init: 2:4 structured sparsity that survives training and merge.

- `pattern`: masks from scores, the violation checker, magnitude and Wanda scores
- `prune`:   which layers, calibration (Wanda), masks on the base weights, digests, masks on disk
- `delta`:   the adapter's update kept inside the mask during training and in peft's merge
- `storage`: compressed 2:4 storage (kept values + 2-bit positions), lossless
- `run`:     what the run's stages call (Training Init prunes before the adapter is built; step 5 records and
             verifies it; Training Exec's merge refuses any violation; the compressed merged model)

This module imports no torch: the config's checks (`problems`) run where torch is not loaded.
"""

from __future__ import annotations

from studio_core.errors import Problem

MASKABLE_METHODS = ("lora", "dora", "rslora", "qlora")
WHY_NOT = {
    "pissa": "PiSSA rewrites the base as a dense residual W - U S V^T at init, so the base is no longer 2:4",
    "prefix": "prefix tuning adds virtual tokens and never merges, so there is no merged weight to keep 2:4",
    "prompt": "prompt tuning adds virtual tokens and never merges, so there is no merged weight to keep 2:4",
}
FORBIDDEN = ("lm_head", "embed", "norm")


def problems(config) -> list[Problem]:
    """Why `config`'s pruning cannot hold the 2:4 pattern through training and merge, each with the fix."""
    p = config.pruning
    if not p.enabled:
        return []
    found = []
    name = config.method.name
    if name not in MASKABLE_METHODS:
        why = WHY_NOT.get(name, f"{name}'s update is not kept inside the mask by this studio (only "
                                f"{', '.join(MASKABLE_METHODS)} are)")
        found.append(Problem("pruning.enabled", f"{why}; use method.name=lora, dora, rslora or qlora, or set "
                                                "pruning.enabled=false"))
    elif getattr(config.method, "init", "") == "olora":
        found.append(Problem("pruning.enabled", "olora init rewrites the base as a dense residual (W - Q R), so the "
                                                "base is no longer 2:4; use method.init=default or gaussian"))
    if p.targets != "auto":
        bad = [t for t in p.targets if any(f in t.lower() for f in FORBIDDEN)]
        if bad:
            found.append(Problem("pruning.targets", f"{', '.join(bad)}: embeddings, norms and the LM head are never "
                                                    "pruned; name attention and MLP projections, or use 'auto'"))
        method_targets = getattr(config.method, "target_modules", "auto")
        if method_targets != "auto" and (missing := [t for t in method_targets if t not in p.targets]):
            found.append(Problem("pruning.targets", f"the adapter also adapts {', '.join(missing)}, which would not "
                                                    "be pruned, and its update there would be dense; add them"))
    if config.training.backend == "unsloth":
        found.append(Problem("training.backend", "unsloth's fused LoRA kernels bypass the masked update that keeps "
                                                 "the merged model 2:4; use transformers+peft (or auto) with pruning"))
    return found
