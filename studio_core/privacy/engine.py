"""DP-SGD over the adapter weights with Opacus, behind the Trainer seam (`TrainerParts.wrap`).

Why a loop of its own rather than Opacus inside `Trainer.train`: the Trainer fetches `gradient_accumulation_steps`
fixed-size batches per optimizer step and normalises the loss by the tokens of all of them together (so one
example's gradient depends on the others'), while DP-SGD with Poisson sampling needs one variable-size logical
batch per step, split into physical batches that tell the optimizer where the logical batch ends. Patching the
Trainer's inner loop for that would depend on its private internals. So `PrivateTrainer` takes the built Trainer
and keeps what the rest of the studio relies on: its arguments, datasets, collator, `evaluate()`, the callback
handler (the studio's callback streams metrics, progress and cancel exactly as without DP; early stopping and
trackers run unchanged), `state` and `log_history`, and checkpoints in the same `checkpoint-N/` layout
(`trainer_state.json` written last; adapter, optimizer, scheduler, RNG) plus the accountant's history.

Per-example gradients:
- LoRA / rsLoRA: Opacus' `GradSampleModule` hooks (`PrivacyEngine.make_private`, grad_sample_mode "hooks"): the
  adapter's `lora_A` / `lora_B` are plain `nn.Linear` layers (checked against one backward per example in tests).
- DoRA: its magnitude layer calls `lora_A`/`lora_B` a second time on an identity matrix and takes its inputs as
  keyword arguments, which Opacus' hooks do not see; its per-example gradients come from one backward per
  example (exact, slower), fed to the same Opacus `DPOptimizer`, Poisson data loader and accountant.

The loss is each example's mean over its supervised tokens, averaged over the expected logical batch (Opacus'
`loss_reduction="mean"`), so no example's gradient depends on another's.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from studio_core.data.tokenize import IGNORE_INDEX
from studio_core.privacy.accounting import PrivacyPlan, epsilon

GRAD_SAMPLE_MODES = {"lora": "hooks", "rslora": "hooks", "dora": "per_example"}
GRAD_SAMPLE_LABELS = {"hooks": "Opacus GradSampleModule hooks",
                      "per_example": "one backward pass per example (exact)"}
PRIVACY_STATE = "privacy_state.json"


class IndexDataset:
    """Row indices as one-tensor tuples: what Opacus' Poisson loader needs to shape an empty batch."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        return (torch.tensor(index),)


class ShardDataset(IndexDataset):
    """Rank `rank`'s share of `size` row indices when `world` processes train: rows rank, rank + world, ..."""

    def __init__(self, size: int, rank: int, world: int):
        super().__init__(len(range(rank, size, world)))
        self.rank, self.world = rank, world

    def __getitem__(self, index: int):
        return (torch.tensor(self.rank + index * self.world),)


class IndexCollator:
    """Sampled indices -> the run's own padded batch, plus the indices (tests replay the same batches)."""

    def __init__(self, examples, collate):
        self.examples, self.collate = examples, collate

    def __call__(self, items) -> dict:
        indices = [int(item[0]) for item in items]
        batch = dict(self.collate([self.examples[i] for i in indices]))
        batch["index"] = torch.tensor(indices, dtype=torch.long)
        return batch


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None = None,
                     targets: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's mean next-token loss over its supervised tokens (shape: batch).

    With `keep` (the collator's `logits_to_keep`, a (batch, seq) mask of the positions whose next token carries
    loss: train/batching.py) `logits` are those positions' only, flattened, and `targets` their next tokens (the
    collator's `shift_labels`): the same losses without projecting the prompt and the padding onto the vocabulary.
    """
    if keep is not None:
        tokens = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX,
                                                   reduction="none")
        rows = keep.nonzero()[:, 0]
        counted = (targets != IGNORE_INDEX).to(tokens.dtype)
        sums = torch.zeros(keep.shape[0], dtype=tokens.dtype, device=tokens.device).index_add(0, rows, tokens)
        counts = torch.zeros_like(sums).index_add(0, rows, counted)
        return sums / counts.clamp(min=1)
    shifted_logits, shifted = logits[:, :-1].float(), labels[:, 1:]
    tokens = torch.nn.functional.cross_entropy(shifted_logits.transpose(1, 2), shifted, ignore_index=IGNORE_INDEX,
                                               reduction="none")
    mask = shifted != IGNORE_INDEX
    return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def batch_rows(batch) -> int:
    return int(batch["input_ids"].shape[0]) if isinstance(batch, dict) else 0


class PrivateSGD:
    """Opacus' pieces for one model: Poisson loader, DPOptimizer (clip, noise), accountant, per-example grads."""

    def __init__(self, model, optimizer, examples, collate, plan: PrivacyPlan, mode: str,
                 autocast_dtype: torch.dtype | None = None, stream: str = "0"):
        """`stream` names this run's sampling stream where several processes train (see `_compose`)."""
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader

        self.plan, self.mode, self.autocast_dtype = plan, mode, autocast_dtype
        self.engine = PrivacyEngine(accountant=plan.accountant, secure_mode=plan.secure_mode)
        loader = DataLoader(IndexDataset(len(examples)), batch_size=plan.logical_batch,
                            collate_fn=IndexCollator(examples, collate))
        if mode == "hooks" and world_size() == 1:
            self.module, self.optimizer, self.loader = self.engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=plan.noise_multiplier,
                max_grad_norm=plan.max_grad_norm, poisson_sampling=True, loss_reduction="mean",
                grad_sample_mode="hooks")
        else:
            self.module, self.optimizer, self.loader = self._compose(model, optimizer, loader, stream)
        if not math.isclose(self.loader.sample_rate, plan.sample_rate, rel_tol=1e-12):
            raise AssertionError(f"Opacus samples at {self.loader.sample_rate}, the plan says {plan.sample_rate}")
        self.device = next(p for p in model.parameters() if p.requires_grad).device

    def _compose(self, model, optimizer, loader, stream: str):
        """What `make_private` builds, from Opacus' parts: for DoRA's per-example backward passes (no hooks module),
        and for several processes.

        Several processes: Opacus' distributed wrapper (`DifferentiallyPrivateDistributedDataParallel`) and its
        distributed optimizer (noise added once, on rank 0, then the all-reduce), but not its distributed sampler:
        that one draws every rank's mask from the global RNG, which `set_seed` makes the same on every rank (the
        same rows of each rank's shard join a step together: not independent), and it skips an empty draw (the ranks
        fall out of step, and one runs out of batches before the last step). Here each rank Poisson-samples its own
        shard of the rows (rank r holds rows r, r+W, ...) at the global sample rate, from a generator of its own
        (seeded from the run's seed, the rank and the step it starts from; the CSPRNG under secure mode), and keeps
        empty draws (a noise-only step, as in one process). Each row then joins each step with probability q,
        independently: Poisson sampling of the whole training set, as the accountant assumes.
        """
        from opacus import GradSampleModule
        from opacus.data_loader import DPDataLoader
        from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP
        from opacus.optimizers import get_optimizer_class

        distributed, rate = world_size() > 1, 1 / len(loader)
        if distributed:
            rank = torch.distributed.get_rank()
            generator = self.engine.secure_rng
            if generator is None:
                digest = hashlib.sha256(f"{stream}/rank-{rank}".encode()).digest()
                generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
            dp_loader = DPDataLoader(ShardDataset(len(loader.dataset), rank, world_size()), sample_rate=rate,
                                     collate_fn=loader.collate_fn, generator=generator)
            model = DPDDP(model)
        else:
            dp_loader = DPDataLoader.from_data_loader(loader, generator=self.engine.secure_rng)
        if self.mode == "hooks":
            self.engine.validate(module=model, optimizer=None, data_loader=None)  # as make_private does
            model = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        optimizer_class = get_optimizer_class(clipping="flat", distributed=distributed, grad_sample_mode="hooks")
        dp_optimizer = optimizer_class(
            optimizer=optimizer, noise_multiplier=self.plan.noise_multiplier, max_grad_norm=self.plan.max_grad_norm,
            expected_batch_size=len(loader.dataset) * rate / world_size(), loss_reduction="mean",
            generator=self.engine.secure_rng, secure_mode=self.plan.secure_mode)
        dp_optimizer.attach_step_hook(self.engine.accountant.get_optimizer_hook_fn(sample_rate=rate))
        return model, dp_optimizer, dp_loader

    @property
    def steps_taken(self) -> int:
        return sum(h[2] for h in self.engine.accountant.history)

    def epsilon(self, extra_steps: int = 0) -> float:
        """Epsilon spent so far (or after `extra_steps` more), by the run's accountant."""
        history = list(self.engine.accountant.history)
        step = (self.plan.noise_multiplier, self.plan.sample_rate)
        if extra_steps and history and tuple(history[-1][:2]) == step:  # as the accountant's own step() merges
            history[-1] = (*step, history[-1][2] + extra_steps)
        elif extra_steps:
            history.append((*step, extra_steps))
        return epsilon(history, self.plan.delta, self.plan.accountant)

    def backward(self, batch) -> tuple[float, int, int]:
        """Per-example gradients of one physical batch into `p.grad_sample`; (loss sum, rows, tokens)."""
        rows = batch_rows(batch)
        if rows == 0:  # Poisson sampling can draw an empty batch: its step is noise only
            for p in self.optimizer.params:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            return 0.0, 0, 0
        batch = {k: v.to(self.device) for k, v in batch.items() if k != "index"}
        tokens = int(batch["attention_mask"].sum())
        if self.mode == "hooks":
            losses = per_example_loss(self._forward(self.module, batch), batch["labels"],
                                      batch.get("logits_to_keep"), batch.get("shift_labels"))
            with warnings.catch_warnings():  # lora_A's input needs no gradient; its hook still fires, as intended
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                losses.mean().backward()
            return float(losses.detach().sum()), rows, tokens
        return self._per_example(batch), rows, tokens

    def _forward(self, module, batch) -> torch.Tensor:
        """Logits; only the supervised positions' where the collator marked them (`logits_to_keep`)."""
        keep = {"logits_to_keep": batch["logits_to_keep"]} if "logits_to_keep" in batch else {}
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            return module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **keep).logits

    def _per_example(self, batch) -> float:
        params, total = self.optimizer.params, 0.0
        grads: list[list[torch.Tensor]] = [[] for _ in params]
        for row in range(batch["input_ids"].shape[0]):
            width = int(batch["attention_mask"][row].sum())
            # Full logits for the one row (the flattened `shift_labels` of the batch do not slice by row).
            one = {k: v[row: row + 1, :width] for k, v in batch.items() if k not in ("logits_to_keep", "shift_labels")}
            loss = per_example_loss(self._forward(self.module, one), one["labels"])[0]
            for slot, g, p in zip(grads, torch.autograd.grad(loss, params, allow_unused=True), params):
                slot.append(torch.zeros_like(p) if g is None else g)
            total += float(loss.detach())
        for p, slot in zip(params, grads):
            p.grad_sample = torch.stack(slot)
        return total


class PrivateTrainer:
    """Stands in for the built HF Trainer: `train()` runs DP-SGD (see the module docstring), `state` is its state."""

    def __init__(self, trainer, plan: PrivacyPlan, mode: str, emit, on_report):
        self.trainer, self.plan, self.mode, self.emit, self.on_report = trainer, plan, mode, emit, on_report
        self.sgd: PrivateSGD | None = None
        self.spent = 0.0
        self._upcoming: float | None = None  # epsilon after the next step, once computed
        self.stopped_at_budget = False

    @property
    def state(self):
        return self.trainer.state

    @property
    def answer_logits_only(self) -> bool:
        """Whether the LM head ran only at the supervised positions: with the hooks where the Trainer's collator
        marks them; never in DoRA's per-example passes (full logits for each row)."""
        return self.mode == "hooks" and bool(getattr(self.trainer.data_collator, "answer_logits_only", False))

    @property
    def model_wrapped(self):
        return self.sgd.module if self.sgd else self.trainer.model

    def fields(self, _state=None) -> dict[str, Any]:
        """The metric line's privacy fields (TrainerParts.metric_fields)."""
        return {"epsilon": round(self.spent, 4), "delta": self.plan.delta}

    def train(self, resume_from_checkpoint: str | None = None):
        from transformers import TrainerState, get_scheduler, set_seed

        t, args = self.trainer, self.trainer.args
        set_seed(args.seed)
        model = t.model
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
        start = Path(resume_from_checkpoint).name if resume_from_checkpoint else "start"
        self.sgd = PrivateSGD(model, optimizer, t.train_dataset.examples, t.data_collator, self.plan, self.mode,
                              torch.bfloat16 if args.bf16 else None, stream=f"seed-{args.seed}/{start}")
        scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(
            args.max_steps), num_training_steps=args.max_steps)
        t.state = TrainerState(is_local_process_zero=t.is_local_process_zero(),
                               is_world_process_zero=t.is_world_process_zero())
        batches = self._physical_batches(args.max_steps)  # before the RNG is restored: making it draws a seed
        if resume_from_checkpoint:
            self._load(Path(resume_from_checkpoint), scheduler)
        state = t.state
        state.max_steps, state.eval_steps, state.save_steps, state.logging_steps = (
            args.max_steps, args.eval_steps, args.save_steps, 1)
        t._initial_num_input_tokens_seen = state.num_input_tokens_seen
        t.control = t.callback_handler.on_train_begin(args, state, t.control)
        if not resume_from_checkpoint and args.eval_on_start:
            self._evaluate()
        while state.global_step < args.max_steps and not t.control.should_training_stop:
            if self._over_budget():
                break
            loss = self._logical_step(batches, scheduler)
            t.log({"loss": loss, "learning_rate": scheduler.get_last_lr()[0]})
            t.control = t.callback_handler.on_step_end(args, state, t.control)
            if state.global_step % args.eval_steps == 0 or state.global_step >= args.max_steps:
                self._evaluate()  # and after the last step, as the Trainer does (pre-flight's estimate counts it)
            if state.global_step % args.save_steps == 0 or t.control.should_save:
                self._save(scheduler)
                t.control.should_save = False
        self._finish()
        return state

    def _physical_batches(self, steps: int):
        """One iterator over the whole run: the Poisson sampler draws `steps` logical batches, each split into
        physical batches of at most the per-device batch (BatchMemoryManager tells the optimizer where each
        logical batch ends). One iterator, so a resumed run in one process draws exactly the batches the
        uninterrupted one would (with several processes each rank draws from a fresh stream: `PrivateSGD._compose`)."""
        from opacus.utils.batch_memory_manager import BatchMemoryManager

        sampler = self.sgd.loader.batch_sampler
        setattr(sampler, "num_batches" if hasattr(sampler, "num_batches") else "steps", steps)
        manager = BatchMemoryManager(data_loader=self.sgd.loader, optimizer=self.sgd.optimizer,
                                     max_physical_batch_size=self.trainer.args.per_device_train_batch_size)
        return iter(manager.__enter__())  # its __exit__ does nothing

    def _logical_step(self, batches, scheduler) -> float | None:
        """Physical batches until Opacus' optimizer takes its (noised) step; returns the mean example loss."""
        sgd, state = self.sgd, self.trainer.state
        before, loss_sum, rows = sgd.steps_taken, 0.0, 0
        while sgd.steps_taken == before:
            batch_loss, n, tokens = sgd.backward(next(batches))
            loss_sum, rows = loss_sum + batch_loss, rows + n
            state.num_input_tokens_seen += tokens
            sgd.optimizer.step()  # clips and accumulates; on the logical batch's last chunk also noises and steps
            sgd.optimizer.zero_grad()
        scheduler.step()
        state.global_step += 1
        state.epoch = state.global_step * self.plan.sample_rate
        # The budget check already computed this step's epsilon (the accountant is the slow part of a tiny step).
        self.spent = self._upcoming if self._upcoming is not None else sgd.epsilon()
        self._upcoming = None
        return loss_sum / rows if rows else None  # an empty Poisson batch: a noise-only step, no loss

    def _over_budget(self) -> bool:
        budget = self.plan.target_epsilon
        if budget is None:
            return False
        upcoming = self._upcoming = self.sgd.epsilon(extra_steps=1)
        if upcoming <= budget * (1 + 1e-9):
            return False
        self._upcoming = None
        self.stopped_at_budget = True
        self.emit("privacy_budget_reached", f"training stopped at step {self.trainer.state.global_step}: one more "
                  f"step would spend epsilon {upcoming:.3f}, over the budget privacy.target_epsilon={budget:g} "
                  f"(spent so far: {self.spent:.3f})", step=self.trainer.state.global_step, epsilon=self.spent,
                  target_epsilon=budget)
        return True

    def _evaluate(self) -> None:
        t, state = self.trainer, self.trainer.state
        metrics = t.evaluate()
        t.model.train()
        value = metrics.get("eval_loss")
        if value is not None and (state.best_metric is None or value < state.best_metric):
            state.best_metric, state.best_global_step = value, state.global_step

    def report(self) -> dict[str, Any]:
        """privacy.json: what the package's evidence and the policy's max_epsilon rule read."""
        p, args = self.plan, self.trainer.args
        return {
            "enabled": True, "unit": "one training example (one row of the training split)",
            "epsilon": self.spent, "delta": p.delta, "accountant": p.accountant,
            "noise_multiplier": p.noise_multiplier, "max_grad_norm": p.max_grad_norm, "sample_rate": p.sample_rate,
            "steps": self.sgd.steps_taken if self.sgd else 0, "N": p.examples, "poisson": True,
            "secure_mode": p.secure_mode, "target_epsilon": p.target_epsilon, "noise_from_target": p.noise_from_target,
            "expected_epsilon_at_max_steps": p.expected_epsilon, "max_steps": p.steps,
            "logical_batch": p.logical_batch, "physical_batch": args.per_device_train_batch_size,
            "processes": world_size(), "per_sample_gradients": GRAD_SAMPLE_LABELS[self.mode],
            "accountant_history": [list(h) for h in self.sgd.engine.accountant.history] if self.sgd else [],
            "stopped_at_budget": self.stopped_at_budget, "training_max_grad_norm_applied": False,
        }

    def _save(self, scheduler) -> None:
        t, state = self.trainer, self.trainer.state
        folder = Path(t.args.output_dir) / f"checkpoint-{state.global_step}"
        if state.best_global_step == state.global_step:
            state.best_model_checkpoint = str(folder)
        if t.is_world_process_zero():
            folder.mkdir(parents=True, exist_ok=True)
            t.model.save_pretrained(str(folder))
            torch.save(self.sgd.optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(scheduler.state_dict(), folder / "scheduler.pt")
            torch.save({"cpu": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                       folder / "rng_state.pth")
            (folder / PRIVACY_STATE).write_text(json.dumps(self.report(), indent=2))
            state.save_to_json(str(folder / "trainer_state.json"))  # last: marks the checkpoint complete
            self._rotate(folder.parent)
            self.on_report(self.report())
        t.control = t.callback_handler.on_save(t.args, state, t.control)

    def _rotate(self, folder: Path) -> None:
        limit, best = self.trainer.args.save_total_limit, self.trainer.state.best_model_checkpoint
        found = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                       key=lambda p: int(p.name.split("-")[-1]))
        keep = set(found[-limit:]) if limit else set(found)
        for path in found:
            if path not in keep and str(path) != best:
                shutil.rmtree(path, ignore_errors=True)

    def _load(self, folder: Path, scheduler) -> None:
        """Weights, optimizer, schedule, RNG and the accountant's history: epsilon keeps counting."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file
        from transformers import TrainerState

        from studio_core.errors import StudioError

        if not (folder / PRIVACY_STATE).is_file():
            raise StudioError(f"{folder.name} was written by a run without privacy: its steps are not in any "
                              "privacy accountant, so it cannot be resumed under DP; start a new run")
        saved = json.loads((folder / PRIVACY_STATE).read_text())
        if not math.isclose(saved["noise_multiplier"], self.plan.noise_multiplier) or \
                not math.isclose(saved["sample_rate"], self.plan.sample_rate):
            raise StudioError(f"{folder.name} trained with noise {saved['noise_multiplier']} at sample rate "
                              f"{saved['sample_rate']}, this run plans {self.plan.noise_multiplier} at "
                              f"{self.plan.sample_rate}: the data or batch changed; start a new run")
        set_peft_model_state_dict(self.trainer.model, load_file(folder / "adapter_model.safetensors"))
        self.sgd.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        rng = torch.load(folder / "rng_state.pth", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.sgd.engine.accountant.history = [tuple(h) for h in saved["accountant_history"]]
        self.trainer.state = TrainerState.load_from_json(str(folder / "trainer_state.json"))
        self.spent = self.sgd.epsilon()

    def _finish(self) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        t, state = self.trainer, self.trainer.state
        best = state.best_model_checkpoint
        if t.args.load_best_model_at_end and best and (Path(best) / "adapter_model.safetensors").is_file():
            set_peft_model_state_dict(t.model, load_file(Path(best) / "adapter_model.safetensors"))
        t.control = t.callback_handler.on_train_end(t.args, state, t.control)
        if t.is_world_process_zero():
            self.on_report(self.report())
