"""What a run's stages call for pruning (each is a no-op when `pruning.enabled` is false).

When, for a run with pruning on:
1. Training Init (step 4), `prune_base`: after the base loads and before the adapter is built, the masks are
   computed (magnitude, or Wanda over the first `calibration_rows` training rows), saved to
   `artifacts/sparsity/masks.safetensors`, and applied to the base weights; the dense and pruned base are
   measured (validation loss, perplexity on general text). For QLoRA the base is already NF4: the masks are
   computed on its de-quantized weights (what QLoRA trains against) and each pruned layer is re-quantized from its
   masked weights (NF4 has an exact zero). Then `mask_adapter` keeps the adapter's update inside the masks.
2. Pruning Aware Init (step 5), `pruning_init`: checks the pruned base (violations per layer, the masks' digest
   against the file) and writes `artifacts/pruning.json`.
3. Training Exec (step 6): `check_trained` counts violations of W + update after training; the merge goes
   through `prepare_base` / `prepare_adapter` (the pruned base, the masked update) and `check_merged` fails the
   merge on any violation; `write_compressed` stores the merged model's pruned tensors compressed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio_core.errors import StudioError

if TYPE_CHECKING:
    from studio_core.context import RunContext

MASKS = "sparsity/masks.safetensors"
COMPRESSED = "sparse"
CPU_SPEED = ("no speed-up is claimed on a CPU: the 2:4 zeros are stored dense by PyTorch, ONNX Runtime and GGUF "
             "CPU kernels, which skip nothing; 2:4 runs faster only on GPUs with sparse tensor cores "
             "(tests/gpu/check_sparse24.py measures torch.sparse.to_sparse_semi_structured there)")


class SparsityViolation(StudioError):
    """A tensor that must be 2:4 has a group of 4 with more than 2 non-zeros."""


def enabled(ctx: RunContext) -> bool:
    return ctx.config.pruning.enabled


def _layers(ctx: RunContext, model):
    from studio_core.sparsity.prune import target_layers

    return target_layers(model, ctx.config.pruning.targets)


def _calibration_batches(ctx: RunContext, model, rows: int):
    """Right-padded input ids and attention masks of the first `rows` training rows, 4 a batch (Wanda reads the
    activations only, so no labels)."""
    import torch

    examples = ctx.prepared_data().train_tokens[:rows]
    device = next(model.parameters()).device
    pad = ctx.tokenizer().pad_token_id
    for start in range(0, len(examples), 4):
        chunk = [e.input_ids for e in examples[start:start + 4]]
        width = max(len(ids) for ids in chunk)
        ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in chunk], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in chunk], device=device)
        yield {"input_ids": ids, "attention_mask": mask}


def prune_base(ctx: RunContext, model, measure: Callable[[Any], dict]) -> None:
    """Training Init, before the adapter: masks on the base's target weights, saved; `measure(model)` (validation
    loss, general-text perplexity) taken on the dense and on the pruned base."""
    if not enabled(ctx):
        return
    from studio_core.sparsity.prune import apply_masks, compute_masks, masks_digest, save_masks, state_digest

    cfg = ctx.config.pruning
    layers = _layers(ctx, model)
    dense = measure(model)
    batches = list(_calibration_batches(ctx, model, cfg.calibration_rows)) if cfg.method == "wanda" else None
    masks = compute_masks(model, layers, cfg.method, batches)
    apply_masks(layers, masks)
    path = ctx.run.artifacts / MASKS
    path.parent.mkdir(parents=True, exist_ok=True)
    save_masks(masks, path)
    record = {"method": cfg.method, "targets": cfg.targets, "layers_pruned": len(layers),
              "calibration_rows": sum(b["input_ids"].shape[0] for b in batches) if batches else 0,
              "masks_sha256": masks_digest(masks), "pruned_base_sha256": state_digest(model),
              "quality": {"dense_base": dense, "pruned_base": measure(model)},
              "base_loaded_in_4bit": bool(getattr(model, "is_loaded_in_4bit", False))}
    ctx.write_artifact("sparsity/pruned.json", record)
    ctx.outputs["masks"] = masks
    ctx.emit("pruned", f"2:4 {cfg.method} masks on {len(layers)} layers; masks {record['masks_sha256'][:12]}")


def masks(ctx: RunContext):
    """The run's masks: this process's, else from the run dir."""
    from studio_core.sparsity.prune import load_masks

    if "masks" not in ctx.outputs:
        path = ctx.run.artifacts / MASKS
        if not path.is_file():
            raise StudioError(f"no masks in {path}: Training Init (step 4) has not pruned this run's base")
        ctx.outputs["masks"] = load_masks(path)
    return ctx.outputs["masks"]


def mask_adapter(ctx: RunContext, peft_model) -> None:
    """Keep the adapter's update inside the base's masks (training forward and peft's merge)."""
    if not enabled(ctx):
        return
    from studio_core.sparsity.delta import mask_adapter as install

    install(peft_model, masks(ctx))


prepare_adapter = mask_adapter


def prepare_base(ctx: RunContext, model) -> None:
    """A fresh base (merge, reload check, a resumed evaluation) pruned with the run's masks and checked against
    the pinned pruned-base digest, so the adapter lands on exactly the base it trained on."""
    if not enabled(ctx):
        return
    from studio_core.sparsity.prune import apply_masks, state_digest

    apply_masks(_layers(ctx, model), masks(ctx))
    record = ctx.read_artifact("sparsity/pruned.json")
    pinned = record["pruned_base_sha256"]
    same_form = bool(getattr(model, "is_loaded_in_4bit", False)) == record["base_loaded_in_4bit"]
    if same_form and (digest := state_digest(model)) != pinned:
        raise StudioError(f"the rebuilt pruned base has digest {digest[:12]}, not the pinned {pinned[:12]}: "
                          "the base weights or the masks changed since training")


def _check(tensors: dict[str, Any], when: str) -> list[dict]:
    from studio_core.sparsity.pattern import sparsity, violations

    rows = [{"name": n, "sparsity": round(sparsity(t), 6), "violations": violations(t)} for n, t in tensors.items()]
    bad = [r for r in rows if r["violations"]]
    if bad:
        worst = ", ".join(f"{r['name']} ({r['violations']})" for r in bad[:3])
        raise SparsityViolation(f"{when}: {sum(r['violations'] for r in bad)} group(s) of 4 hold more than 2 "
                                f"non-zeros in {len(bad)} tensor(s), e.g. {worst}")
    return rows


def _peft_layers(peft_model) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    from studio_core.sparsity.delta import base_path

    return {base_path(p): m for p, m in peft_model.named_modules() if isinstance(m, LoraLayer)}


def pruning_init(ctx: RunContext) -> None:
    """Step 5: verify the pruned base in the live PEFT model (0 violations, masks as saved); write pruning.json."""
    from studio_core.sparsity.prune import dense_weight, masks_digest

    record = ctx.read_artifact("sparsity/pruned.json")
    run_masks = masks(ctx)
    if masks_digest(run_masks) != record["masks_sha256"]:
        raise SparsityViolation("the masks file does not match the masks Training Init recorded")
    model = ctx.outputs["peft_model"].get_base_model()
    weights = {name: dense_weight(model.get_submodule(name).get_base_layer()
                                  if hasattr(model.get_submodule(name), "get_base_layer") else model.get_submodule(name))
               for name in run_masks}
    outside = [n for n, w in weights.items() if bool((w.cpu() != 0)[~run_masks[n]].any())]
    if outside:
        raise SparsityViolation(f"weights outside the mask are non-zero in {', '.join(outside[:3])}")
    rows = _check(weights, "after pruning")
    adapted = sorted(_peft_layers(ctx.outputs["peft_model"]))
    shapes = {n: list(w.shape) for n, w in weights.items()}
    report = {"pattern": "2:4", **record, "verified": True,
              "layers": [{**r, "shape": shapes[r["name"]], "adapted": r["name"] in adapted} for r in rows],
              "checks": {"after_pruning": {"violations": 0, "tensors": len(rows)}},
              "adapter_update": "masked in the forward pass: W*m + m*(s B@A) (DoRA: its magnitude times that "
                                "direction's unit rows)", "speed": CPU_SPEED}
    ctx.write_artifact("pruning.json", report)
    ctx.emit("pruning_verified", f"2:4 on {len(rows)} layers, 0 violating groups; adapter update masked on "
                                 f"{len(adapted)} layers", layers=len(rows))


def _update_report(ctx: RunContext, **fields: Any) -> None:
    report = ctx.read_artifact("pruning.json")
    for key, value in fields.items():
        if key == "checks":
            report.setdefault("checks", {}).update(value)
        else:
            report[key] = value
    ctx.write_artifact("pruning.json", report)


def check_trained(ctx: RunContext, peft_model, general_perplexity: Callable[[Any], float]) -> None:
    """After training: W + masked update of every pruned layer is still 2:4; records the trained model's
    `general_perplexity(model)` beside the base's."""
    if not enabled(ctx):
        return
    import torch

    from studio_core.sparsity.prune import dense_weight

    base = peft_model.get_base_model()
    layers = _peft_layers(peft_model)
    effective = {}
    with torch.no_grad():
        for name in masks(ctx):
            module = base.get_submodule(name)
            weight = dense_weight(module.get_base_layer() if name in layers else module).float().cpu()
            if name in layers:
                adapter = layers[name].active_adapters[0]
                weight = weight + layers[name].get_delta_weight(adapter).float().cpu()
            effective[name] = weight
    rows = _check(effective, "after training")
    _update_report(ctx, checks={"after_training": {"violations": 0, "tensors": len(rows)}},
                   tuned_general_text_perplexity=general_perplexity(peft_model))


def check_merged(ctx: RunContext, merged_dir: Path) -> dict:
    """After merge: every pruned tensor of the saved merged model is 2:4, or the merge fails."""
    from safetensors.torch import load_file

    state = {}
    for file in sorted(merged_dir.glob("*.safetensors")):
        state.update(load_file(str(file)))
    names = [f"{n}.weight" for n in masks(ctx)]
    missing = [n for n in names if n not in state]
    if missing:
        raise SparsityViolation(f"after merge: {len(missing)} pruned tensor(s) missing from {merged_dir}, "
                                f"e.g. {missing[:2]}")
    rows = _check({n: state[n] for n in names}, "after merge")
    _update_report(ctx, checks={"after_merge": {"violations": 0, "tensors": len(rows)}},
                   layers=[{**layer, "merged_sparsity": r["sparsity"]} for layer, r in
                           zip(ctx.read_artifact("pruning.json")["layers"], rows, strict=True)])
    return state


def write_compressed(ctx: RunContext, state: dict) -> None:
    """The merged model with its pruned tensors in the compressed 2:4 format, checked to round-trip exactly."""
    import torch

    from studio_core.sparsity.storage import load_compressed, save_compressed

    out = ctx.artifact_dir(COMPRESSED)
    names = [f"{n}.weight" for n in masks(ctx)]
    report = save_compressed(state, names, out / "model.sparse24.safetensors")
    back = load_compressed(out / "model.sparse24.safetensors")
    exact = set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    if not exact:
        raise SparsityViolation("the compressed merged model does not round-trip to the merged model")
    for name in ("config.json", "generation_config.json"):
        if (ctx.run.artifacts / "merged" / name).is_file():
            shutil.copy2(ctx.run.artifacts / "merged" / name, out / name)
    report = {**report, "round_trip_exact": True, "layers": len(report["layers"])}
    (out / "sparse24.json").write_text(json.dumps(report, indent=2) + "\n")
    _update_report(ctx, compression=report)
    ctx.emit("compressed", f"2:4 tensors stored compressed: {report['ratio']:.3f}x of dense at "
                           f"{next(iter(state.values())).dtype}, {report['ratio_16bit']:.4f}x at 16 bits")


ADAPTER_README = """# This adapter belongs to a 2:4-pruned base

The run pruned the base model to 2:4 sparsity (step 5, Pruning Aware Init) and trained this adapter with its
update masked to the same pattern: the trained model is `W*m + m*(s B@A)` (DoRA: its magnitude times that
direction). **Stock peft applies the update unmasked** (`W*m + s B@A`), so `PeftModel.from_pretrained` on any
base computes a different, dense model: this adapter is not an exact description of what was trained.

The deliverable is the merged model (`merged/`, and `sparse/` for the same weights stored compressed), which
is exactly 2:4 and was checked against the masked trained model. To rebuild the pruned base, load the base
pinned in `base_model.json`, multiply each layer's weight listed in `sparsity_masks.safetensors` by its mask
(`studio_core.sparsity.prune.load_masks`), and check the result's digest against `pruned_base.sha256`.
"""


def pin_adapter(ctx: RunContext, adapter_dir: Path) -> None:
    """The adapter folder pins the pruned base (its digest, the masks' digest) and carries the masks + a README."""
    if not enabled(ctx):
        return
    record = ctx.read_artifact("sparsity/pruned.json")
    shutil.copy2(ctx.run.artifacts / MASKS, adapter_dir / "sparsity_masks.safetensors")
    pinned = json.loads((adapter_dir / "base_model.json").read_text())
    pinned["pruned_base"] = {"pattern": "2:4", "method": record["method"], "sha256": record["pruned_base_sha256"],
                             "masks_sha256": record["masks_sha256"], "masks_file": "sparsity_masks.safetensors",
                             "valid_only_on": "the base above with these masks applied (digest sha256)"}
    (adapter_dir / "base_model.json").write_text(json.dumps(pinned, indent=2) + "\n")
    (adapter_dir / "README.md").write_text(ADAPTER_README)


def onnx_check(onnx_path: Path, ctx: RunContext) -> dict:
    """The exported graph still holds the 2:4 weights: at least as many of its 2-D initializers of a pruned
    layer's shape are 2:4 along one axis as there are pruned tensors (the dynamo exporter folds each linear's
    transpose into a renamed constant, so they are matched by shape and pattern, not by name)."""
    from collections import Counter

    import onnx
    import torch
    from onnx import numpy_helper

    from studio_core.sparsity.pattern import violations

    def two_four(w) -> bool:
        t = torch.from_numpy(w.copy())
        return any(x.shape[1] % 4 == 0 and violations(x) == 0 for x in (t, t.T))

    wanted = Counter(tuple(sorted(m.shape)) for m in masks(ctx).values())
    graph = onnx.load(str(onnx_path), load_external_data=True).graph
    found: Counter = Counter()
    for t in graph.initializer:
        if len(t.dims) == 2 and tuple(sorted(t.dims)) in wanted:
            w = numpy_helper.to_array(t)
            if two_four(w):
                found[tuple(sorted(t.dims))] += 1
    short = {f"{a}x{b}": wanted[(a, b)] - found[(a, b)] for a, b in wanted if found[(a, b)] < wanted[(a, b)]}
    if short:
        raise SparsityViolation(f"the ONNX export holds fewer 2:4 weights than were pruned (missing by shape: "
                                f"{short})")
    return {"pattern": "2:4", "pruned_tensors": sum(wanted.values()), "two_four_initializers": sum(found.values())}


def engine_note(report: dict) -> dict:
    """What the 2:4 weights buy on the engine that was built: TensorRT's sparse tactics, or nothing on a CPU."""
    if report.get("backend") == "tensorrt":
        return {"pattern": "2:4", "sparse_weights_flag": bool(report.get("sparse_weights")),
                "speed": "TensorRT may pick sparse kernels for the 2:4 layers (SPARSE_WEIGHTS); not measured here"}
    return {"pattern": "2:4", "speed": CPU_SPEED}
