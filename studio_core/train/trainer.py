"""Step 6, Training Exec, on the Hugging Face `Trainer`.

The Trainer gives gradient accumulation, mixed precision, clipping, schedules with warmup, periodic
evaluation, early stopping with the best checkpoint kept, and checkpoints that carry optimizer, scheduler,
RNG state and the data position (so a resumed run replays exactly the remaining batches). The studio adds
one callback that streams metrics and progress to the run dir, checks the cancel flag at every step and
warns when validation loss rises while training loss falls.

`build_trainer` is the one place the `Trainer` is built. What later features attach, they pass to it as
`TrainerParts`, each piece independent of the others:
- `callbacks`: extra `TrainerCallback`s (trackers: MLflow, TensorBoard, W&B; per-method hooks);
- `collator`: the batch collator (sequence packing replaces the padding one);
- `wrap`: functions called with the built Trainer before training starts, in order, each returning the
  Trainer to use; a privacy engine (Opacus) replaces the optimizer and the train data loader here;
- `comm_hook`: a DDP communication hook `(state, hook)`, registered on the DDP-wrapped model when training
  starts under torch.distributed (several processes). With one process there is no DDP model, and the run's
  events say the hook was not used.
- `metric_fields`: functions of the Trainer state whose values join every training metric line (epsilon
  spent under DP, bytes sent per step under gradient compression).
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from studio_core.config import RunConfig
from studio_core.train.batching import Collator, TokenizedDataset, answer_logits_work
from studio_core.train.adapters import training_callbacks

CHECKPOINTS = "checkpoints"


@dataclass
class TrainerParts:
    """What features attach to the Trainer (see the module docstring); all optional, none aware of the others."""

    callbacks: list[Any] = field(default_factory=list)
    collator: Callable[[list], dict] | None = None
    wrap: list[Callable[[Trainer], Trainer]] = field(default_factory=list)
    comm_hook: tuple[Any, Callable] | None = None
    metric_fields: list[Callable[[Any], dict[str, Any]]] = field(default_factory=list)

    def add(self, other: TrainerParts | None) -> TrainerParts:
        """Join one feature's parts to these. A collator and a comm hook can each come from one feature only."""
        if other is None:
            return self
        for name in ("collator", "comm_hook"):
            if getattr(self, name) is not None and getattr(other, name) is not None:
                raise ValueError(f"two features both set the Trainer's {name}; only one can")
            setattr(self, name, getattr(self, name) if getattr(other, name) is None else getattr(other, name))
        self.callbacks += other.callbacks
        self.wrap += other.wrap
        self.metric_fields += other.metric_fields
        return self


@dataclass
class TrainOutcome:
    steps: int
    cancelled: bool
    best_checkpoint: str | None
    best_val_loss: float | None
    overfitting_warned: bool
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    answer_logits_only: bool = False  # the LM head ran only where the loss is taken (train/batching.py: collate)


class StudioCallback(TrainerCallback):
    """Metrics and progress to the run dir, cancel at step boundaries, the overfitting warning."""

    def __init__(self, emit, metric, cancel, max_steps: int, start_step: int = 0,
                 metric_fields: list[Callable[[Any], dict[str, Any]]] | None = None):
        self.emit, self.metric, self.cancel = emit, metric, cancel  # cancel: anything with is_set()
        self.metric_fields = metric_fields or []
        self.max_steps = max_steps
        self.start_step = start_step
        self.cancelled = False
        self.overfitting_warned = False
        self.train_losses: list[float] = []
        self.val_losses: list[tuple[int, float]] = []
        self._t0 = time.perf_counter()
        self._last = (time.perf_counter(), 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()
        self._last = (self._t0, state.num_input_tokens_seen or 0)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        return self._check_cancel(control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self._train_line(state, logs)
        if "eval_loss" in logs:
            self._eval_line(state, logs)
        # Logging precedes the save decision of the same step, so a cancel seen here still checkpoints this step.
        return self._check_cancel(control)

    def _check_cancel(self, control):
        if self.cancel.is_set():
            self.cancelled = True
            control.should_save = True  # leave a checkpoint at this step so the run can resume
            control.should_training_stop = True
        return control

    def _train_line(self, state, logs: dict) -> None:
        now, tokens = time.perf_counter(), state.num_input_tokens_seen or 0
        span = max(now - self._last[0], 1e-9)
        tokens_per_s = (tokens - self._last[1]) / span
        self._last = (now, tokens)
        elapsed = now - self._t0
        done = state.global_step - self.start_step
        eta = elapsed / done * (self.max_steps - state.global_step) if done > 0 else None
        loss = _float(logs["loss"])  # None for a step without examples (an empty Poisson batch under DP)
        if loss is not None:
            self.train_losses.append(loss)
        extra: dict[str, Any] = {}
        for fields in self.metric_fields:
            extra.update(fields(state))
        self.metric(step=state.global_step, epoch=round(state.epoch or 0, 4), loss=loss,
                    lr=logs.get("learning_rate"), grad_norm=_float(logs.get("grad_norm")),
                    tokens_per_s=round(tokens_per_s, 1), elapsed_s=round(elapsed, 2), **extra)
        self.emit("progress", f"step {state.global_step}/{self.max_steps}", step=state.global_step,
                  max_steps=self.max_steps, elapsed_s=round(elapsed, 1), eta_s=None if eta is None else round(eta, 1),
                  loss=loss, **extra)

    def _eval_line(self, state, logs: dict) -> None:
        val = float(logs["eval_loss"])
        self.val_losses.append((state.global_step, val))
        self.metric(step=state.global_step, epoch=round(state.epoch or 0, 4), val_loss=val,
                    val_ppl=_perplexity(val), elapsed_s=round(time.perf_counter() - self._t0, 2))
        self._check_overfitting(state.global_step)

    def _check_overfitting(self, step: int) -> None:
        """Validation loss up on each of the last two evaluations while training loss went down."""
        if self.overfitting_warned or len(self.val_losses) < 3 or len(self.train_losses) < 4:
            return
        (_, a), (_, b), (_, c) = self.val_losses[-3:]
        half = len(self.train_losses) // 2
        early, late = self.train_losses[:half], self.train_losses[half:]
        if c > b > a and sum(late) / len(late) < sum(early) / len(early):
            self.overfitting_warned = True
            self.emit("warning", f"overfitting at step {step}: validation loss rose {a:.4f} -> {b:.4f} -> {c:.4f} "
                                 "while training loss fell; the model is memorising the training set. Fewer steps, "
                                 "more data or a lower learning rate help.", warning="overfitting", step=step)


def _float(value) -> float | None:
    return None if value is None else float(value)


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def training_arguments(cfg: RunConfig, output_dir: Path, precision: str, resuming: bool = False):
    t = cfg.training
    early_stopping = t.early_stopping_patience > 0
    return TrainingArguments(
        output_dir=str(output_dir), max_steps=t.max_steps, per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, weight_decay=t.weight_decay,
        warmup_steps=math.ceil(t.warmup_ratio * t.max_steps), max_grad_norm=t.max_grad_norm,
        bf16=precision == "bf16", fp16=precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing, eval_strategy="steps", eval_steps=t.eval_steps,
        eval_on_start=not resuming,  # the step-0 validation loss is the baseline
        save_strategy="steps", save_steps=t.save_steps,
        save_total_limit=2 if early_stopping else 1, load_best_model_at_end=early_stopping,
        metric_for_best_model="eval_loss", greater_is_better=False, logging_strategy="steps", logging_steps=1,
        include_num_input_tokens_seen="non_padding", seed=t.seed, data_seed=t.seed, report_to="none",
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True, use_cpu=not _on_cuda(),
        label_names=["labels"],
        ddp_find_unused_parameters=False,  # under torchrun: every adapter parameter takes part in every forward
    )


def _on_cuda() -> bool:
    from studio_core.catalog import is_cuda_available

    return is_cuda_available()


def latest_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint; a half-written one (the process died while saving) is removed.

    The Trainer writes `trainer_state.json` last, after weights, optimizer, scheduler and RNG state, so a
    checkpoint whose state file is present and parses is complete.
    """
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    candidates = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")
                  and p.name.split("-", 1)[1].isdigit()]
    for path in sorted(candidates, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)  # incomplete: its step is replayed from the one before
            continue
        return str(path)
    return None


class CommHookCallback(TrainerCallback):
    """Registers a DDP communication hook on the DDP-wrapped model once the Trainer has wrapped it."""

    def __init__(self, trainer_ref: list, state, hook, emit):
        self.trainer_ref, self.state, self.hook, self.emit = trainer_ref, state, hook, emit
        self.registered = False

    def on_train_begin(self, args, state, control, **kwargs):
        from torch.nn.parallel import DistributedDataParallel

        wrapped = self.trainer_ref[0].model_wrapped
        if isinstance(wrapped, DistributedDataParallel):
            wrapped.register_comm_hook(self.state, self.hook)
            self.registered = True
        else:
            self.emit("warning", "the gradient communication hook was not used: training runs in one process, so "
                                 "there is no gradient exchange to compress")
        return control


def build_trainer(cfg: RunConfig, peft_model, train_examples, val_examples, pad_id: int, output_dir: Path,
                  precision: str, studio_callback: StudioCallback, parts: TrainerParts | None = None,
                  resuming: bool = False) -> Trainer:
    """The one place the Trainer is built: the run's arguments, data, the studio's callback, and the `parts`
    later features attach (callbacks, collator, wrappers, DDP communication hook)."""
    parts = parts or TrainerParts()
    callbacks: list[Any] = [studio_callback, *training_callbacks(cfg.method), *parts.callbacks]
    if cfg.training.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.training.early_stopping_patience))
    trainer_ref: list = []
    if parts.comm_hook is not None:
        callbacks.append(CommHookCallback(trainer_ref, *parts.comm_hook, studio_callback.emit))
    if cfg.training.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    trainer = Trainer(
        model=peft_model, args=training_arguments(cfg, output_dir, precision, resuming=resuming),
        data_collator=parts.collator or Collator(pad_id, answer_logits_work(peft_model, train_examples, pad_id)),
        train_dataset=TokenizedDataset(train_examples),
        eval_dataset=TokenizedDataset(val_examples[: cfg.training.eval_rows]), callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to the run dir and the CLI's own display
    for wrap in parts.wrap:
        trainer = wrap(trainer)
    trainer_ref.append(trainer)
    return trainer


def train(cfg: RunConfig, peft_model, train_examples, val_examples, pad_id: int, run_dir: Path, precision: str,
          emit, metric, cancel, parts: TrainerParts | None = None) -> TrainOutcome:
    """Run (or resume, when `run_dir` holds a checkpoint) the configured training; returns what happened.

    `cancel` is anything with `is_set()` (a `studio_core.context.CancelSignal` in a run), checked every step.
    """
    resume_from = latest_checkpoint(run_dir)
    start_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
    if resume_from and start_step >= cfg.training.max_steps:
        emit("resumed", f"training had finished at {Path(resume_from).name}: its weights are loaded, no step is "
                        "retrained", step=start_step)
        return finished_outcome(cfg, peft_model, resume_from)
    if resume_from:
        emit("resumed", f"resuming from {Path(resume_from).name}", step=start_step)
    parts = parts or TrainerParts()
    callback = StudioCallback(emit, metric, cancel, cfg.training.max_steps, start_step, parts.metric_fields)
    trainer = build_trainer(cfg, peft_model, train_examples, val_examples, pad_id, run_dir / CHECKPOINTS, precision,
                            callback, parts, resuming=bool(resume_from))
    from studio_core.train.attention import training_attention
    from studio_core.train.precision import autocast_adapter_inputs

    with autocast_adapter_inputs(peft_model, precision), training_attention(peft_model):
        trainer.train(resume_from_checkpoint=resume_from)
    state = trainer.state
    return TrainOutcome(
        steps=state.global_step, cancelled=callback.cancelled, best_checkpoint=state.best_model_checkpoint,
        best_val_loss=state.best_metric, overfitting_warned=callback.overfitting_warned,
        stopped_early=state.global_step < cfg.training.max_steps and not callback.cancelled,
        history=state.log_history,
        answer_logits_only=getattr(trainer, "answer_logits_only",  # PrivateTrainer says; else the collator
                                   getattr(getattr(trainer, "data_collator", None), "answer_logits_only", False)),
    )


def finished_outcome(cfg: RunConfig, peft_model, checkpoint: str) -> TrainOutcome:
    """The outcome of a training that reached `max_steps` before the process died (in a later step).

    `Trainer.train` resumed from the final checkpoint would run one step past the end, so the adapter weights are
    loaded from the checkpoint instead: the best one where early stopping keeps it, as the Trainer does at the end.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    best = state.get("best_model_checkpoint")
    keep = Path(best if best and cfg.training.early_stopping_patience > 0 else checkpoint)
    set_peft_model_state_dict(peft_model, load_file(keep / "adapter_model.safetensors"))
    replay = StudioCallback(lambda *a, **k: None, lambda **k: None, threading.Event(), cfg.training.max_steps)
    for entry in state["log_history"]:  # the overfitting flag, as the original callback computed it
        if entry.get("loss") is not None:
            replay.train_losses.append(float(entry["loss"]))
        if "eval_loss" in entry:
            replay.val_losses.append((entry["step"], float(entry["eval_loss"])))
            replay._check_overfitting(entry["step"])
    return TrainOutcome(steps=state["global_step"], cancelled=False, best_checkpoint=best,
                        best_val_loss=state.get("best_metric"), overfitting_warned=replay.overfitting_warned,
                        stopped_early=False, history=state["log_history"])

