"""RunConfig: one pydantic section per wizard step, with help text and defaults that work offline on CPU.

Every field's `description` is the UI's help text and the CLI's schema. Cross-field checks collect every
problem and raise one `ConfigError` naming each field path and its fix.
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, model_validator

from studio_core.errors import ConfigError, Problem
from studio_core.methods import METHOD_IDS, METHOD_SECTIONS, method_problems, method_section
from studio_core.methods.lora import LoraMethod
from studio_core.sections import Section

EMBEDDED_MODEL_REF = "embedded:smollm2-135m-instruct"
DEMO_DATA_REF = "demo:legal-audit"
DEFAULT_SAVE_STEPS = 20

# The demo's recipe on the embedded model, by config section, from bench/demo_learning.py's sweep
# (bench/results/demo_learning.json): reason_first-90-grouped reached verdict accuracy 0.875 on 200 held-out rows
# after 11.9 minutes of training on 2 CPU cores, every rule above its majority baseline, where the plain loss stays
# at chance at 40, 120 and 300 steps. The label loss compares each row's verdict with a row of the other verdict
# under the same policy rule (training.label_group), so the decision is learnt within each rule. 200 task rows bound
# a coin toss's accuracy to 0.5 +- 0.07 (95%), where 32 rows leave +- 0.17.
DEMO_RECIPE = {
    "training": {"max_steps": 90, "per_device_batch_size": 8, "gradient_accumulation_steps": 2,
                 "label_words": ["COMPLIANT", "NON-COMPLIANT"], "label_group": "Policy rule: (.*)"},
    "evaluation": {"task_rows": 200},
}
DEMO_RECIPE_NOTE = ("the demo data's recipe: 90 steps of 8 x 2 rows, the label loss comparing each verdict with one "
                    "of the other verdict under the same policy rule; bench/demo_learning.py measured verdict accuracy "
                    "0.875 on 200 held-out rows after 11.9 minutes of training on 2 CPU cores, where the plain loss "
                    "stays at chance. Your own data, or another model, starts from the plain defaults.")


class DataConfig(Section):
    enabled: bool = Field(True, description="Run step 1, Data Resolve.")
    path: str = Field(
        DEMO_DATA_REF,
        description="Training data: a local .jsonl/.json/.csv/.parquet file, a local Hugging Face dataset folder "
        "(datasets' save_to_disk, or Parquet shards laid out like a Hub dataset repo: its train split is read), "
        "'hf:<org>/<name>' (a Hub dataset, from the local cache first; offline with HF_HUB_OFFLINE=1), or "
        "'demo:legal-audit' for the built-in synthetic legal-audit dataset, which on the embedded model brings its "
        "measured training recipe (DEMO_RECIPE in studio_core/config.py) for every field the config leaves out.",
    )
    file_format: Literal["auto", "jsonl", "json", "csv", "parquet", "arrow"] = Field(
        "auto", description="File format; 'auto' decides from the file extension (or the folder's files)."
    )
    row_schema: Literal["auto", "alpaca", "prompt_completion", "messages", "sharegpt", "text"] = Field(
        "auto",
        description="Row schema: alpaca (instruction/input/output, optional system and history), "
        "prompt_completion, messages (OpenAI chat, with tools and tool_calls), sharegpt (conversations with "
        "from/value, incl. function_call/observation and a tools field) or text (raw text for continued "
        "pre-training: every token trained, short rows packed up to max_length); 'auto' detects it, and "
        "maps common column names (prompt/response, question/answer, query, system_prompt, context).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description='Map canonical field names to your column names, e.g. {"instruction": "question", '
        '"output": "answer"}; empty: detected from the column names and reported.',
    )
    train_on: Literal["all_assistant", "last_assistant"] = Field(
        "all_assistant",
        description="Which assistant turns carry the loss: every one (all_assistant) or only each "
        "conversation's last (last_assistant). Tool calls are assistant turns; tool replies never carry loss.",
    )
    on_bad_rows: Literal["fail", "skip"] = Field(
        "fail", description="What to do with invalid rows: fail the run (listing them) or skip and report them."
    )
    val_path: str | None = Field(
        None, description="Optional separate validation file (same format rules); replaces val_fraction."
    )
    val_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Fraction of rows held out for validation when val_path is not set."
    )
    split_seed: int = Field(42, description="Seed of the deterministic train/validation split.")
    max_length: int = Field(
        512, ge=16, le=131072, description="Maximum tokens per example; longer examples are truncated (the "
        "data report's quality section lists them and the tokens lost); text rows are packed up to it."
    )
    demo_rows: int = Field(2400, ge=100, description="Number of rows generated for 'demo:legal-audit'.")
    demo_answer: Literal["reason_first", "verdict_first", "reason_compare"] = Field(
        "reason_first", description="The answer's format in 'demo:legal-audit': the reason, then the verdict "
        "(reason_first: the decision is learnt better, bench/demo_learning.py); the verdict first (verdict_first, "
        "runs before 2026-12-04); or the reason ending in the comparison the verdict rests on (reason_compare).")


class ModelConfig(Section):
    enabled: bool = Field(True, description="Run step 2, Model Resolve.")
    ref: str = Field(
        EMBEDDED_MODEL_REF,
        description="Base model: 'embedded:smollm2-135m-instruct' (ships with the studio), a local Hugging "
        "Face folder with safetensors weights, 'hf:<org>/<name>' (Hub, cached), or 'tiny-random:<family>'.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for 'hf:' references.")


class PreflightConfig(Section):
    enabled: bool = Field(True, description="Run step 3, Pre-flight Check (a go/no-go report).")
    micro_run_steps: int = Field(
        5, ge=0, le=20, description="Training steps measured for the time estimate, timed from the third (the "
        "first two run faster or slower than the run will); 0 skips the micro-run."
    )
    memory_headroom: float = Field(
        0.9, gt=0.0, le=1.0, description="Fraction of free memory the estimate may use before it is a no-go."
    )



def _method_tag(value: Any) -> str | None:
    """The method section's class: by its `name`, LoRA when a config file leaves the name out."""
    name = value.get("name", "lora") if isinstance(value, dict) else getattr(value, "name", None)
    if name not in METHOD_IDS:
        return None
    return method_section(name).__name__


MethodSection = Annotated[
    Union[tuple(Annotated[cls, Tag(cls.__name__)] for cls in METHOD_SECTIONS)],  # noqa: UP007
    Discriminator(_method_tag, custom_error_type="invalid_method",
                  custom_error_message="not a method; choose one of: " + ", ".join(METHOD_IDS)),
]



class TrainingConfig(Section):
    enabled: bool = Field(True, description="Run step 6, Training Exec.")
    max_steps: int = Field(
        40, ge=1, description="Optimizer steps to run (the default fits a few minutes on a laptop CPU)."
    )
    per_device_batch_size: int = Field(4, ge=1, description="Examples per forward pass.")
    gradient_accumulation_steps: int = Field(2, ge=1, description="Forward passes per optimizer step.")
    learning_rate: float = Field(5e-4, gt=0, le=1.0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine"] = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Fraction of steps spent warming up.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute precision; 'auto' picks the fastest the hardware supports."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay on the adapter weights.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Clip the gradient norm to this value.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    eval_steps: int = Field(10, ge=1, description="Evaluate on the validation split every N steps.")
    eval_rows: int = Field(
        32, ge=1, description="Validation rows used by the periodic evaluation during training (keeps it quick)."
    )
    save_steps: int = Field(
        DEFAULT_SAVE_STEPS, ge=1, description="Save a resumable checkpoint every N steps (a multiple of eval_steps; "
        f"when unset, the first multiple of eval_steps from {DEFAULT_SAVE_STEPS})."
    )
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop after this many evaluations without a better validation loss; 0 turns it off. "
        "The best checkpoint is kept and its adapter is the one saved.",
    )
    seed: int = Field(42, description="Seed for initialisation, data order and dropout.")
    label_words: list[str] = Field(
        default_factory=list, description="Class labels the answers carry (e.g. COMPLIANT, NON-COMPLIANT; positive, "
        "negative): training then also learns each row's label against the other rows of its batch (the labels' "
        "logits centred over the batch), which no step can satisfy by moving every row's label at once. With the "
        "plain loss alone a label tends to flip for whole batches while the decision stays at chance (measured on "
        "the demo: bench/demo_readout.py). Each row's label is the first of these words its answer holds; rows "
        "with none are counted and take only the plain loss. Empty: off.")
    label_loss_weight: float = Field(
        1.0, gt=0.0, le=100.0, description="Weight of the label loss (training.label_words) beside the plain loss.")
    label_group: str = Field(
        "", description="A regular expression over each training row's prompt; its first group (or the whole match) "
        "names the row's group, e.g. 'Policy rule: (.*)' on the demo, one group per rule. Each forward pass then "
        "takes, from each group it draws, one row of every label word, and the label loss compares rows only with "
        "rows of their own group, so it learns the decision within each group instead of telling the groups apart "
        "(measured on the demo: bench/demo_readout.py --loss paired). Needs training.label_words and a per-device "
        "batch that is a multiple of their number. Rows the pattern does not match, and groups that lack a label, "
        "are left out of training and counted. Empty: each row is compared with the whole pass.")
    backend: Literal["auto", "unsloth", "transformers+peft"] = Field(
        "auto",
        description="Training backend: 'auto' uses unsloth (fused kernels) for lora/qlora where it is installed "
        "and a CUDA GPU is visible, else transformers+peft; the run records which ran and why.",
    )
    nproc: int = Field(
        1, ge=1, le=64, description="Training processes on this machine (torch.distributed through torchrun: gloo "
        "on CPU, nccl on GPU; one process per GPU). Each process takes per_device_batch_size examples, so the "
        "global batch is nproc x nnodes x per_device_batch_size x gradient_accumulation_steps; only the adapter's "
        "gradients are exchanged.",
    )
    nnodes: int = Field(
        1, ge=1, le=1024, description="Machines training together (each runs nproc processes); more than 1 needs "
        "rdzv_endpoint and the studio home on a file system every machine shares (see the README's recipe).",
    )
    rdzv_endpoint: str | None = Field(
        None, description="host:port of torchrun's c10d rendezvous when nnodes > 1 (a port free on that host); "
        "one machine alone picks a free local port itself.",
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_save_steps(cls, data: Any) -> Any:
        """Checkpoints fall on evaluation steps: with only eval_steps given, save_steps follows it."""
        if isinstance(data, dict) and "save_steps" not in data and isinstance(data.get("eval_steps"), int):
            data = {**data, "save_steps": checkpoint_interval(data["eval_steps"])}
        return data


def checkpoint_interval(eval_steps: int) -> int:
    """The first multiple of `eval_steps` from DEFAULT_SAVE_STEPS: the checkpoint interval when only eval is set."""
    return max(1, eval_steps) * -(-DEFAULT_SAVE_STEPS // max(1, eval_steps))



def _stage_section(step: str, extra: str = "") -> Any:
    return Field(False, description=f"Run {step}.{extra}")


class PruningConfig(Section):
    enabled: bool = _stage_section("step 5, Pruning Aware Init (2:4 masks)", " The base's target weights are pruned "
                                   "to 2 of every 4 before the adapter is built, and the adapter's update is masked "
                                   "the same way, so the merged model is exactly 2:4 (lora, dora, rslora, qlora).")
    method: Literal["magnitude", "wanda"] = Field(
        "wanda", description="How the 2 kept weights of every 4 are chosen: 'magnitude' (largest |W|) or 'wanda' "
        "(largest |W| x ||X||, the input feature's activation norm over the calibration rows; Sun et al. 2023).",
    )
    targets: list[str] | Literal["auto"] = Field(
        "auto", description="Linear layers to prune: 'auto' (every linear layer inside the decoder blocks: the "
        "attention and MLP projections) or module names such as [\"q_proj\", \"v_proj\"]. Embeddings, norms and "
        "the LM head are never pruned; every layer the adapter adapts must be pruned too.",
    )
    calibration_rows: int = Field(
        32, ge=1, le=4096, description="Training rows whose activations Wanda measures (the first N of the training "
        "split); magnitude pruning reads none.",
    )


# Pruning (step 5) keeps 2:4 through training and merge only where the adapter's update can be masked.
PRUNABLE_METHODS = ("lora", "dora", "rslora", "qlora")
PRUNING_REFUSED = {
    "pissa": "PiSSA rewrites the base as a dense residual W - U S V^T at init, so the base is no longer 2:4",
    "prefix": "prefix tuning adds virtual tokens and never merges, so there is no merged weight to keep 2:4",
    "prompt": "prompt tuning adds virtual tokens and never merges, so there is no merged weight to keep 2:4",
}
NEVER_PRUNED = ("lm_head", "embed", "norm")


def pruning_problems(config) -> list[Problem]:
    """Why `config`'s pruning cannot hold the 2:4 pattern through training and merge, each with the fix."""
    p = config.pruning
    if not p.enabled:
        return []
    found = []
    name = config.method.name
    if name not in PRUNABLE_METHODS:
        why = PRUNING_REFUSED.get(name, f"{name}'s update is not kept inside the mask by this studio (only "
                                f"{', '.join(PRUNABLE_METHODS)} are)")
        found.append(Problem("pruning.enabled", f"{why}; use method.name=lora, dora, rslora or qlora, or set "
                                                "pruning.enabled=false"))
    elif getattr(config.method, "init", "") == "olora":
        found.append(Problem("pruning.enabled", "olora init rewrites the base as a dense residual (W - Q R), so the "
                                                "base is no longer 2:4; use method.init=default or gaussian"))
    if p.targets != "auto":
        bad = [t for t in p.targets if any(f in t.lower() for f in NEVER_PRUNED)]
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


PRIVACY_METHODS = ("lora", "rslora", "dora")  # per-sample gradients checked against brute force for these


class PrivacyConfig(Section):
    """DP-SGD (Opacus) over the adapter weights. The unit of privacy is one training example (one row)."""

    enabled: bool = Field(
        False, description="Differentially private training (DP-SGD through Opacus) of the adapter weights; the "
        "base stays frozen. The unit of privacy is one training example (one row of the training split): a user "
        "with several rows is protected only as far as their rows together."
    )
    target_epsilon: float | None = Field(
        8.0, gt=0, description="Privacy budget epsilon to spend by training.max_steps: the noise multiplier is "
        "computed to reach it. With noise_multiplier set too, it is the budget: training stops before a step "
        "would exceed it. Empty: no budget (noise_multiplier then sets the noise)."
    )
    noise_multiplier: float | None = Field(
        None, gt=0, description="Noise standard deviation relative to max_grad_norm; empty: computed from "
        "target_epsilon, delta, the sample rate and training.max_steps."
    )
    delta: float | None = Field(
        None, gt=0, lt=1, description="Privacy parameter delta; empty: 1/(10 N) for N training examples. It must "
        "stay below 1/N (at 1/N, releasing one random example outright would meet the guarantee)."
    )
    max_grad_norm: float = Field(
        1.0, gt=0, description="Per-example clipping norm: each example's adapter gradient is clipped to this L2 "
        "norm before noise is added. Under DP it replaces training.max_grad_norm, which does not apply."
    )
    accountant: Literal["prv", "rdp", "gdp"] = Field(
        "prv", description="Privacy accountant: 'prv' (numerical composition of privacy random variables, tight "
        "upper bound) or 'rdp' (Renyi DP, looser). 'gdp' is refused: its central-limit approximation can "
        "underestimate epsilon."
    )
    poisson_sampling: bool = Field(
        True, description="Poisson sampling: each example joins each step's batch with probability q (the sample "
        "rate), so batch sizes vary around the logical batch (per-device batch x accumulation). The accountants "
        "assume it; it cannot be turned off."
    )
    secure_mode: bool = Field(
        False, description="Cryptographically secure noise and sampling (needs the torchcsprng package)."
    )


class CommConfig(Section):
    enabled: bool = _stage_section("step 7, Dynamic Sparsification (gradient and update compression)")
    method: Literal["randk", "topk"] = Field(
        "topk", description="Gradient compression: 'randk' sends k random entries scaled by d/k (unbiased; the "
        "indices come from a seed every process shares per step, so only values travel); 'topk' sends each "
        "process's k largest entries with their indices and keeps what it did not send for the next step (error "
        "feedback).",
    )
    ratio: float = Field(
        0.1, gt=0.0, le=1.0, description="k/d: the fraction of the adapter's gradient entries each process sends "
        "per step (and of each layer's update kept in the shipped sparse update file).",
    )
    seed: int = Field(0, description="Seed of Rand-K's shared index choice (mixed with the step and bucket).")
    update_ratios: list[float] = Field(
        default_factory=lambda: [1.0, 0.5, 0.1, 0.01],
        description="k/d values of the size-vs-quality curve: each layer's update (merged minus base weight) kept "
        "as its top-k entries, loaded back and measured on the validation split.",
    )


class EvaluationConfig(Section):
    enabled: bool = Field(True, description="Run step 8, Evaluation: base against tuned on held-out rows.")
    max_rows: int = Field(64, ge=1, description="Validation rows for loss and perplexity.")
    task_rows: int = Field(
        32, ge=1, description="Held-out rows answered by greedy generation for the task metric (verdict accuracy "
        "on the demo data, exact match otherwise).",
    )
    max_new_tokens: int = Field(48, ge=1, le=4096, description="Longest generated answer, in tokens.")
    batch_size: int = Field(
        32, ge=1, le=256, description="Prompts answered at once (greedy, left-padded); a batch holds at most "
        "8,192 prompt tokens, so long prompts go in smaller batches. On 2 CPU cores 32 answered the demo's rows "
        "2.07x faster than 8 (64 rows: 63 answers identical, the same 61 verdicts right; bench/eval_batch.py).",
    )
    samples: int = Field(5, ge=0, description="Held-out prompts saved with base and tuned answers side by side.")
    test_path: str | None = Field(
        None, description="Optional separate test file (same formats and row schemas as data.path), measured "
        "like the validation split: loss, perplexity and the generation metrics.",
    )
    prompts: list[str] = Field(
        default_factory=list, description="Your own prompts, answered by base and tuned side by side in the samples.",
    )
    metrics: list[Literal["exact_match", "token_f1", "rouge_l"]] = Field(
        default_factory=lambda: ["exact_match", "token_f1", "rouge_l"],
        description="Generation metrics computed on the held-out answers (verdict accuracy is added on the demo data).",
    )


class ExportConfig(Section):
    enabled: bool = _stage_section("step 9, Export ONNX")
    opset: int = Field(18, ge=18, le=23, description="ONNX opset version of the exported graph.")
    parity_tolerance: float = Field(
        1e-4, gt=0, le=1e-2, description="Largest relative logit error allowed between ONNX Runtime and PyTorch (fp32).",
    )
    parity_shapes: list[tuple[int, int]] = Field(
        default_factory=lambda: [(1, 8), (2, 17), (3, 33)],
        description="(batch, sequence) shapes of the random token batches the parity check runs; sequence >= 2.",
    )


class CompileConfig(Section):
    enabled: bool = _stage_section("step 10, Compile (TensorRT on a GPU, else ONNX Runtime)")
    backend: Literal["auto", "tensorrt", "onnxruntime"] = Field(
        "auto", description="'auto': TensorRT where it and a CUDA GPU are present, else ONNX Runtime.",
    )
    precision: Literal["fp16", "bf16", "fp32"] = Field(
        "fp16", description="TensorRT engine precision (ONNX Runtime on CPU stays fp32, or int8 weights with int8).",
    )
    int8: bool = Field(
        False, description="ONNX Runtime: int8 linear weights (see int8_scheme), accuracy cost measured.",
    )
    int8_scheme: Literal["weight_only", "dynamic"] = Field(
        "weight_only", description=(
            "With int8: 'weight_only' stores 8-bit block-quantized weights (ONNX Runtime MatMulNBits): about 44% of "
            "the fp32 size, close in accuracy (SmolLM2-135M: top-1 agreement 0.94), up to 1.25x faster on a CPU; "
            "'dynamic' also quantizes activations at run time: about 2x faster on a CPU but far less accurate on "
            "small LLMs (SmolLM2-135M: top-1 agreement 0.53)."
        ),
    )
    batch_range: tuple[int, int, int] = Field(
        (1, 1, 8), description="TensorRT optimization profile for the batch size: (min, optimal, max).",
    )
    sequence_range: tuple[int, int, int] = Field(
        (2, 128, 512), description="TensorRT optimization profile for the sequence length: (min, optimal, max).",
    )
    engines: list[Literal["onnx_kv", "gguf"]] = Field(
        ["onnx_kv"], description=(
            "Engines that generate, built from the merged model (step 6) without needing step 9: 'onnx_kv', a "
            "KV-cache ONNX model (onnxruntime-genai's builder; precision in onnx_kv_precision); 'gguf', GGUF files "
            "for llama.cpp and an Ollama Modelfile (types in gguf_quants). Default: 'onnx_kv' at int8, the fastest "
            "CPU engine of bench/generation.py with top-1 agreement >= 0.95 against the fp32 model on SmolLM2-135M "
            "(0.953 over 512 positions; int4 decoded as fast but agreed on 0.72; llama.cpp did not build here)."
        ),
    )
    onnx_kv_precision: Literal["int4", "int8", "fp32"] = Field(
        "int8", description=(
            "Weights of the 'onnx_kv' engine: int8 or int4 (MatMulNBits, blocks of 32, int8 compute) or fp32. On "
            "SmolLM2-135M (whose weights come from a 4-bit file) top-1 agreement with fp32 was 0.95 at int8, 0.72 "
            "at int4; fp32 agrees exactly but decoded about 3x slower than int8 (bench/generation.py)."
        ),
    )
    gguf_quants: list[Literal["f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]] = Field(
        ["f16", "q8_0"], description=(
            "GGUF files to write with 'gguf' (one per type; the Modelfile names the first of q8_0, f16, the rest). "
            "Each is read back by transformers and its logits checked against the merged model. 4-5 bit types keep "
            "the embeddings at q8_0, as llama.cpp does. Architectures: Llama (SmolLM2) and Qwen2."
        ),
    )


class PackageConfig(Section):
    enabled: bool = _stage_section("step 11, TGSP Packing")
    archive: bool = Field(
        False, description="Also write the package as one deterministic archive, artifacts/package.tar.gz."
    )


class SigningConfig(Section):
    enabled: bool = _stage_section("step 12, Evidence Signing")
    key_id: str | None = Field(
        None,
        description="Id (or unique prefix) of the key in <home>/keys to sign with; empty uses the only key there "
        "(create one with `peft-studio keys generate`).",
    )
    passphrase_env: str = Field(
        "PEFT_STUDIO_KEY_PASSPHRASE",
        description="Name of the environment variable holding the key's passphrase, if the key is encrypted; "
        "the passphrase itself is never stored in the config.",
    )


class PolicyConfig(Section):
    enabled: bool = _stage_section("the promotion policy gate after signing")
    path: str | None = Field(
        None, description="Policy JSON file (rules such as require_signature, max_val_loss, max_epsilon)."
    )
    channel: str = Field("stable", description="Registry channel the package is promoted to when every rule passes.")


class TrackingConfig(Section):
    enabled: bool = Field(
        False, description="Send the run's params, every step's metrics and its artifacts to the trackers in "
        "tracking.backends (on by itself when tracking.backends is given). A tracker that fails warns once and "
        "never fails the run.",
    )
    backends: list[Literal["mlflow", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["mlflow"],
        description="Trackers: mlflow (a local store, by default sqlite:///<home>/mlflow.db), tensorboard (event "
        "files in the run dir, with adapter weight histograms), wandb (offline files in the run dir by default).",
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (e.g. sqlite:///path/mlflow.db or http://127.0.0.1:5000); empty: "
        "sqlite:///<home>/mlflow.db.",
    )
    mlflow_experiment: str = Field("peft-studio", min_length=1, description="MLflow experiment the runs go to.")
    wandb_project: str = Field("peft-studio", min_length=1, description="W&B project name.")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="W&B mode: offline writes the run's files in the run dir (sync them later with "
        "`wandb sync`); online needs WANDB_API_KEY in the environment (never stored by the studio).",
    )
    histograms: bool = Field(
        True, description="TensorBoard: a histogram of every adapter weight at each evaluation.",
    )
    flush_timeout_s: float = Field(
        30.0, ge=0.0, description="At the end of the run, wait at most this long for the trackers to finish.",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_with_backends(cls, data: Any) -> Any:
        """Naming backends turns tracking on, unless `enabled` says otherwise."""
        if isinstance(data, dict) and "backends" in data and "enabled" not in data:
            data = {**data, "enabled": bool(data["backends"])}
        return data


class RunConfig(Section):
    """The whole run: one section per wizard step. Saved as the run's config.json."""

    name: str = Field("run", max_length=64, description="A short name for the run; part of its id.")
    simulate: bool = Field(
        False,
        description="Simulation: validate the real data and model, then run the pipeline on a tiny random "
        "model of the same architecture and a 64-row slice.",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Step 1: Data Resolve.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Step 2: Model Resolve.")
    preflight: PreflightConfig = Field(default_factory=PreflightConfig, description="Step 3: Pre-flight.")
    method: MethodSection = Field(default_factory=LoraMethod, description="Step 4: Training Init.")
    pruning: PruningConfig = Field(default_factory=PruningConfig, description="Step 5: Pruning Aware Init.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Step 6: Training Exec.")
    comm: CommConfig = Field(default_factory=CommConfig, description="Step 7: Dynamic Sparsification.")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Differential privacy.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Step 8: Evaluation.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Step 9: Export ONNX.")
    compile: CompileConfig = Field(default_factory=CompileConfig, description="Step 10: Compile.")
    package: PackageConfig = Field(default_factory=PackageConfig, description="Step 11: TGSP Packing.")
    signing: SigningConfig = Field(default_factory=SigningConfig, description="Step 12: Evidence Signing.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Promotion policy gate.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment tracking.")

    @model_validator(mode="before")
    @classmethod
    def _take_data_recipe(cls, data: Any) -> Any:
        return with_data_recipe(data) if isinstance(data, dict) else data


LABEL_FIELDS = ("label_words", "label_group")
RECIPE_KEYS = ("data.path", "model.ref", "privacy.enabled")  # what a config's recipe depends on (`switch_recipe`)


def data_recipe(path: str, ref: str, private: bool = False) -> dict[str, dict[str, Any]]:
    """The settings a built-in dataset brings for a model, by section: the demo's recipe on the embedded model,
    where it was measured (DEMO_RECIPE), without its label loss under privacy (where it cannot run: the label loss
    compares rows with each other); none for your own data or another model."""
    if path != DEMO_DATA_REF or ref != EMBEDDED_MODEL_REF:
        return {}
    if not private:
        return DEMO_RECIPE
    return {**DEMO_RECIPE, "training": {k: v for k, v in DEMO_RECIPE["training"].items() if k not in LABEL_FIELDS}}


def _field(data: dict[str, Any], section: str, key: str, default: Any) -> Any:
    part = data.get(section, {})
    return part.get(key, default) if isinstance(part, dict) else getattr(part, key, None)


def _recipe_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    path, ref = _field(data, "data", "path", DEMO_DATA_REF), _field(data, "model", "ref", EMBEDDED_MODEL_REF)
    private = bool(_field(data, "privacy", "enabled", False))
    return data_recipe(path, ref, private) if isinstance(path, str) and isinstance(ref, str) else {}


def with_data_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """Config data with each field of its data's recipe that it leaves out. The recipe's label loss is left out
    beside a per-device batch that is not a multiple of its label words, where it cannot run."""
    recipe = _recipe_of(data)
    if not recipe or not all(isinstance(data.get(name, {}), dict) for name in recipe):
        return data
    out = dict(data)
    for name, fields in recipe.items():
        given = out.get(name, {})
        out[name] = {**copy.deepcopy({k: v for k, v in fields.items() if k not in given}), **given}
    training, given = out.get("training", {}), data.get("training", {})
    words = training.get("label_words")
    batch = training.get("per_device_batch_size")
    if "label_words" not in given and words and (not isinstance(batch, int) or batch % len(words)):
        out["training"] = {k: v for k, v in training.items() if k not in LABEL_FIELDS or k in given}
    elif "label_group" not in given and not words:  # your own label words, none: no group of them either
        out["training"] = {k: v for k, v in training.items() if k != "label_group"}
    return out


def switch_recipe(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Config data (in full, as the studio holds it) with `path` ("data.path", "model.ref" or "privacy.enabled")
    set to `value`: each field the old recipe set, and still at that value, takes the new one's (its value there,
    else the field's default), so the demo's label words do not follow you to your own file or model, or into a
    private run; fields you changed stay."""
    old = _recipe_of(data)
    out = copy.deepcopy(data)
    section, key = path.split(".")
    out[section][key] = value
    new = _recipe_of(out)
    for name in {*old, *new}:
        fields = RunConfig.model_fields[name].annotation
        for field in {*old.get(name, {}), *new.get(name, {})}:
            plain = fields.model_fields[field].get_default(call_default_factory=True)
            if out[name].get(field) == old.get(name, {}).get(field, plain):
                out[name][field] = copy.deepcopy(new.get(name, {}).get(field, plain))
    return out


def cross_field_problems(config: RunConfig) -> list[Problem]:
    """Checks that span fields; every problem is returned, none is raised."""
    problems: list[Problem] = []
    if config.method.enabled != config.training.enabled:
        problems.append(Problem(
            "training.enabled",
            "Training Init (method.enabled) and Training Exec (training.enabled) run together; "
            "set both to true or both to false",
        ))
    needs_training = {"pruning": "pruning", "privacy": "privacy", "comm": "comm"}
    for section in needs_training:
        if getattr(config, section).enabled and not config.training.enabled:
            problems.append(Problem(f"{section}.enabled", "needs training; set training.enabled=true"))
    if config.preflight.enabled and not (config.data.enabled and config.model.enabled):
        problems.append(Problem(
            "preflight.enabled", "pre-flight needs data and model; set data.enabled and model.enabled to true"
        ))
    if config.evaluation.enabled and not config.training.enabled:
        problems.append(Problem("evaluation.enabled", "compares base and tuned, so it needs training.enabled=true"))
    if config.training.enabled and not (config.data.enabled and config.model.enabled):
        problems.append(Problem("training.enabled", "training needs data.enabled and model.enabled"))
    if config.export.enabled and not config.training.enabled:
        problems.append(Problem("export.enabled", "exports the merged model, so it needs training.enabled=true"))
    if config.compile.enabled and not config.training.enabled:
        problems.append(Problem("compile.enabled", "compiles the merged model, so it needs training.enabled=true"))
    if config.compile.enabled and not config.export.enabled and not config.compile.engines:
        problems.append(Problem("compile.engines", "is empty and step 9 is off, so there is nothing to compile; "
                                "choose 'onnx_kv' or 'gguf', or set export.enabled=true"))
    if config.signing.enabled and not config.package.enabled:
        problems.append(Problem("signing.enabled", "signing needs a package; set package.enabled=true"))
    if config.policy.enabled and not config.signing.enabled:
        problems.append(Problem("policy.enabled", "the policy gate needs signing; set signing.enabled=true"))
    if config.policy.enabled and not config.policy.path:
        problems.append(Problem("policy.path", "the policy gate needs a policy file; set policy.path"))
    if config.package.enabled and not config.training.enabled:
        problems.append(Problem("package.enabled", "a package ships a trained adapter; set training.enabled=true"))
    if config.training.eval_steps > config.training.max_steps and config.training.enabled:
        problems.append(Problem(
            "training.eval_steps",
            f"{config.training.eval_steps} exceeds training.max_steps={config.training.max_steps}, so no "
            "evaluation would run; lower it",
        ))
    if config.training.early_stopping_patience and config.training.save_steps % config.training.eval_steps:
        problems.append(Problem(
            "training.save_steps",
            f"{config.training.save_steps} is not a multiple of training.eval_steps={config.training.eval_steps}; "
            "early stopping keeps the best evaluated checkpoint, so checkpoints must fall on evaluation steps; set "
            f"training.save_steps={checkpoint_interval(config.training.eval_steps)} (or leave it unset to follow "
            "eval_steps)",
        ))
    problems.extend(_distributed_problems(config))
    words = config.training.label_words
    if words and (len(set(words)) < 2 or any(not w.strip() for w in words)):
        problems.append(Problem("training.label_words", f"{words} needs two or more different, non-empty words (the "
                                "labels a row can have), or none to turn the label loss off"))
    if words and config.training.per_device_batch_size < 2:
        problems.append(Problem("training.label_words", "the label loss compares each row's label with the other rows "
                                "of its forward pass, and training.per_device_batch_size=1 gives it none to compare "
                                "with; set training.per_device_batch_size to 2 or more, or clear training.label_words"))
    problems.extend(_label_group_problems(config))
    if words and config.data.row_schema == "text":
        problems.append(Problem("training.label_words", "text rows have no answer to find a label in; use rows with "
                                "an answer (alpaca, prompt_completion, messages) or clear training.label_words"))
    if config.data.val_path is not None and config.data.val_path == config.data.path:
        problems.append(Problem("data.val_path", "is the training file itself; point it at a separate file"))
    if config.tracking.enabled and not config.tracking.backends:
        problems.append(Problem("tracking.backends", "tracking is on but names no tracker; add mlflow, tensorboard "
                                                     "or wandb, or set tracking.enabled=false"))
    if config.method.enabled:
        problems.extend(method_problems(config))
    problems.extend(pruning_problems(config))
    if config.privacy.enabled:
        problems.extend(privacy_problems(config))
    return problems


def _label_group_problems(config: RunConfig) -> list[Problem]:
    """`training.label_group`: a pattern that compiles, beside label words, with whole groups in every pass."""
    training = config.training
    if not training.label_group:
        return []
    if not training.label_words:
        return [Problem("training.label_group", "groups the rows the label loss compares, and training.label_words "
                        "is empty, so there is no label loss; set the label words or clear training.label_group")]
    try:
        re.compile(training.label_group)
    except re.error as exc:
        return [Problem("training.label_group", f"{training.label_group!r} is not a regular expression ({exc}); "
                        "e.g. 'Policy rule: (.*)' groups the demo's rows by their rule")]
    k, batch = len(training.label_words), training.per_device_batch_size
    if batch % k:
        near = " or ".join(str(n) for n in sorted({max(k, batch // k * k), (batch // k + 1) * k}))
        return [Problem("training.label_group", f"each forward pass takes one row of each of the {k} label words "
                        f"from a group, and training.per_device_batch_size={batch} is not a multiple of {k}; set it "
                        f"to {near}")]
    return []


def privacy_problems(config: RunConfig) -> list[Problem]:
    """What DP-SGD cannot cover: the privacy analysis assumes per-example gradients, clipped, of one model."""
    problems = []
    privacy, method = config.privacy, config.method.name
    if privacy.accountant == "gdp":
        problems.append(Problem("privacy.accountant", "'gdp' (Gaussian DP) approximates the composition by a "
                                "central limit theorem and can underestimate epsilon; choose 'prv' or 'rdp'"))
    if not privacy.poisson_sampling:
        problems.append(Problem("privacy.poisson_sampling", "the accountants' guarantee assumes Poisson sampling; "
                                "fixed-size shuffled batches are not covered; set it to true"))
    if privacy.target_epsilon is None and privacy.noise_multiplier is None:
        problems.append(Problem("privacy.target_epsilon", "set target_epsilon (the noise follows from it) or "
                                "noise_multiplier"))
    if method not in PRIVACY_METHODS:
        problems.append(Problem("privacy.enabled", f"method {method} is not supported under differential privacy "
                                "(its per-example gradients are not computed or not checked); use one of "
                                + ", ".join(PRIVACY_METHODS)))
    if getattr(getattr(config, "comm", None), "enabled", False):
        problems.append(Problem("comm.enabled", "gradient compression changes the noised gradient after clipping "
                                "and noise are accounted, and the privacy analysis does not cover it; turn one off"))
    if getattr(config.data, "packing", False) or config.data.row_schema == "text":
        problems.append(Problem("data.row_schema" if config.data.row_schema == "text" else "data.packing",
                                "sequence packing puts several examples in one row, so one row's clipped gradient "
                                "mixes examples and the per-example guarantee is lost; use unpacked rows"))
    if config.training.gradient_checkpointing:
        problems.append(Problem("training.gradient_checkpointing", "recomputing the forward pass breaks the "
                                "per-example gradient hooks; turn it off under privacy"))
    if config.training.precision == "fp16":
        problems.append(Problem("training.precision", "fp16 loss scaling scales each example's gradient before "
                                "it is clipped; use fp32 or bf16 under privacy"))
    if config.training.backend == "unsloth":
        problems.append(Problem("training.backend", "unsloth's fused kernels give no per-example gradients; use "
                                "transformers+peft (or auto) under privacy"))
    if config.pruning.enabled:
        problems.append(Problem("pruning.enabled", "step 5's masked update is computed from the LoRA weights "
                                "directly (m * s B@A), so the per-example gradient hooks on the LoRA layers never "
                                "run and the clipped, noised gradient would be wrong; turn pruning or privacy off"))
    if config.training.label_words:
        problems.append(Problem("training.label_words", "the label loss compares each row with the other rows of its "
                                "batch, so one example's gradient depends on the others and per-example clipping no "
                                "longer bounds its influence; clear training.label_words under privacy"))
    if config.training.nnodes > 1:
        problems.append(Problem("training.nnodes", "differentially private training runs on one machine in this "
                                "version (several processes on it are tested, several machines are not); set "
                                "training.nnodes=1 under privacy"))
    if config.privacy.secure_mode:
        from importlib.util import find_spec

        if find_spec("torchcsprng") is None:
            problems.append(Problem("privacy.secure_mode", "needs the torchcsprng package, which is not installed; "
                                    "turn secure_mode off or install torchcsprng"))
    return problems


def _distributed_problems(config: RunConfig) -> list[Problem]:
    """Several processes or machines: what torchrun and DDP need from the config."""
    problems: list[Problem] = []
    t = config.training
    if t.nnodes > 1 and not t.rdzv_endpoint:
        problems.append(Problem("training.rdzv_endpoint", f"training.nnodes={t.nnodes} needs the rendezvous "
                                "host:port every machine reaches, e.g. node0:29500"))
    if t.rdzv_endpoint and t.rdzv_endpoint.rpartition(":")[2].isdigit() is False:
        problems.append(Problem("training.rdzv_endpoint", f"{t.rdzv_endpoint!r} is not host:port; e.g. node0:29500"))
    if (t.nproc > 1 or t.nnodes > 1) and t.backend == "unsloth":
        problems.append(Problem("training.backend", "unsloth trains in one process; set training.backend=auto or "
                                "transformers+peft, or training.nproc=1"))
    if any(not 0.0 < r <= 1.0 for r in config.comm.update_ratios):
        problems.append(Problem("comm.update_ratios", "every k/d must lie in (0, 1]; e.g. [1, 0.5, 0.1, 0.01]"))
    return problems


def _problems_from_validation(error: ValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = list(item["loc"])
        tags = {cls.__name__: cls for cls in METHOD_SECTIONS}
        tag = tags[loc.pop(1)] if len(loc) > 1 and loc[0] == "method" and loc[1] in tags else None
        path = ".".join(str(p) for p in loc)
        path = f"{prefix}{path}" if path else prefix.rstrip(".") or "config"
        message = item["msg"]
        if item["type"] == "extra_forbidden" and tag:
            params = ", ".join(n for n in tag.model_fields if n not in ("enabled", "name"))
            ids = "/".join(get_args(tag.model_fields["name"].annotation))
            message = f"not a parameter of method {ids}; its parameters are: {params}"
        elif item["type"] == "extra_forbidden":
            message = f"unknown key{did_you_mean(path)}"
        elif item["type"] == "invalid_method":
            path = f"{prefix}method.name"
        problems.append(Problem(path, message))
    return problems


def validate_config(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from plain data, reporting every field and cross-field problem at once."""
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_problems_from_validation(e)) from e
    problems = cross_field_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def all_field_paths(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every settable dotted path, e.g. 'training.max_steps'."""
    paths: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(all_field_paths(annotation, f"{prefix}{name}."))
        elif name == "method" and model is RunConfig:  # every method's parameters, each path once
            for cls in METHOD_SECTIONS:
                paths.extend(p for p in all_field_paths(cls, f"{prefix}{name}.") if p not in paths)
        else:
            paths.append(f"{prefix}{name}")
    return paths


def did_you_mean(path: str) -> str:
    close = difflib.get_close_matches(path, all_field_paths(), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def json_schema() -> dict[str, Any]:
    """The JSON schema of RunConfig (what `peft-studio schema` prints)."""
    return RunConfig.model_json_schema()
