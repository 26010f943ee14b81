"""Step 10, Compile: a TensorRT engine where TensorRT and a CUDA GPU are present, else an ONNX Runtime model.

The report names the engine really built (`onnxruntime-1.32.0-cpu`, `tensorrt-10.13.0-nvidia-h200`), never
one that was only asked for, and says why TensorRT was not used when it was not. `tensorrt` is imported only
after `studio_core.catalog` says it is usable: on a machine without a GPU its import can abort.

ONNX Runtime path: the graph optimizations (ORT_ENABLE_EXTENDED: fusions that stay portable across CPUs,
unlike ORT_ENABLE_ALL's layout changes) are saved to disk with the weights as external data; `int8` adds
an 8-bit model, weight-only (MatMulNBits) or dynamic (weights and run-time activations), whose accuracy cost
against the fp32 ONNX is measured and reported.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from studio_core.errors import ConfigError, MissingBackendError, Problem, StudioError
from studio_core.export.onnx import ONNX_FILE
from studio_core.hardware.profile import int8_saturates

OPTIMIZED_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ENGINE_FILE = "model.engine"
ACCURACY_SHAPE = (2, 16)
WEIGHT_ONLY_BLOCK = 32
INT8_PRECISION = {"weight_only": "int8 weights (weight-only, blocks of 32), int8 compute",
                  "dynamic": "int8 weights and activations (dynamic)"}
ACCURACY_SEED = 1234


class CompileError(StudioError):
    """The engine could not be built from the ONNX graph; the message carries the builder's own errors."""


def compile_model(onnx_dir: Path, out_dir: Path, backend: str = "auto", int8: bool = False, precision: str = "fp16",
                  batch_range: tuple[int, int, int] = (1, 1, 8),
                  sequence_range: tuple[int, int, int] = (2, 128, 512),
                  int8_scheme: str = "weight_only") -> dict[str, Any]:
    """Compile `onnx_dir/model.onnx` into `out_dir`; returns the report (engine built, files, accuracy, timings).

    backend: "auto" (TensorRT where usable, else ONNX Runtime), "tensorrt" (MissingBackendError when it is not
    usable) or "onnxruntime". `int8` and `int8_scheme` apply to ONNX Runtime; `precision` and the ranges to
    TensorRT.
    """
    onnx_path = onnx_dir / ONNX_FILE
    if not onnx_path.is_file():
        raise CompileError(f"{onnx_path} not found: run step 9 (export.enabled=true) before compiling")
    check_ranges(batch_range, sequence_range)
    out_dir.mkdir(parents=True, exist_ok=True)
    use_trt, why_not = choose_backend(backend)
    start = time.perf_counter()
    if use_trt:
        report = build_tensorrt(onnx_path, out_dir, precision, batch_range, sequence_range)
    else:
        report = build_onnxruntime(onnx_path, out_dir, int8, int8_scheme)
        report["tensorrt_not_used"] = why_not
    report.update(backend_requested=backend, compile_seconds=round(time.perf_counter() - start, 2))
    return report


def check_ranges(batch_range: tuple[int, int, int], sequence_range: tuple[int, int, int]) -> None:
    """The optimization profile's (min, optimal, max) must be ordered; the exported sequence axis starts at 2."""
    problems = [Problem(f"compile.{name}", f"{list(values)} must be (min, optimal, max) with min <= optimal <= max "
                        f"and min >= {low}") for name, values, low in
                (("batch_range", batch_range, 1), ("sequence_range", sequence_range, 2))
                if not low <= values[0] <= values[1] <= values[2]]
    if problems:
        raise ConfigError(problems)


def choose_backend(backend: str) -> tuple[bool, str | None]:
    """(use TensorRT, why not when not) from the request and what the catalog says is usable here."""
    from studio_core.catalog import backend_status

    if backend == "onnxruntime":
        return False, "compile.backend is 'onnxruntime'"
    status = backend_status("tensorrt")
    if status.available:
        return True, None
    if backend == "tensorrt":
        raise MissingBackendError("tensorrt", status.install, f"compile.backend='tensorrt': {status.reason}; "
                                  "or set compile.backend='auto' to fall back to ONNX Runtime")
    return False, _why_not_tensorrt(status)


def _why_not_tensorrt(status) -> str:
    from studio_core.catalog import backend_status

    if not backend_status("cuda").available:
        installed = "tensorrt not installed" if status.version is None else "tensorrt installed"
        return f"{installed}; no CUDA GPU ({backend_status('cuda').reason})"
    return f"tensorrt {status.reason}"


# ONNX Runtime -------------------------------------------------------------------------------------------------


def build_onnxruntime(onnx_path: Path, out_dir: Path, int8: bool, int8_scheme: str = "weight_only") -> dict[str, Any]:
    """The graph-optimized fp32 model, and with `int8` the 8-bit one (the engine then)."""
    import onnxruntime as ort

    optimized = optimize_graph(onnx_path, out_dir / OPTIMIZED_FILE)
    engine_file = optimized
    report: dict[str, Any] = {"backend": "onnxruntime", "optimization_level": "ORT_ENABLE_EXTENDED"}
    report["accuracy"] = {"optimized_vs_onnx": compare_onnx(onnx_path, optimized)}
    if int8:
        engine_file = quantize_int8(onnx_path, out_dir / INT8_FILE, int8_scheme)
        report["accuracy"]["int8_vs_onnx"] = compare_onnx(onnx_path, engine_file)
    precision = INT8_PRECISION[int8_scheme] if int8 else "fp32"
    if int8 and int8_scheme == "dynamic":
        report["int8_reduce_range"] = int8_saturates()  # 7-bit weights (see quantize_int8)
        if report["int8_reduce_range"]:
            precision += "; weights in 7 bits, this CPU has no VNNI"
    report.update(engine=f"onnxruntime-{ort.__version__}-cpu", engine_file=engine_file.name, precision=precision,
                  files=_files(out_dir))
    return report


def optimize_graph(onnx_path: Path, out_path: Path) -> Path:
    """Run ONNX Runtime's graph optimizations once and save the result (weights as external data)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out_path)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                     out_path.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return out_path


def quantize_int8(onnx_path: Path, out_path: Path, scheme: str = "weight_only") -> Path:
    """8-bit linear (MatMul) weights, saved with external data.

    "weight_only": symmetric 8-bit blocks of 32 weights (MatMulNBits, accuracy_level 4: int8 compute), the scheme
    ONNX Runtime's own LLM builds use. "dynamic": per-channel int8 weights and activations quantized per tensor
    at run time (MatMulInteger); faster on a CPU, but LLM activations' outliers make it lossy. On an x86 CPU without
    VNNI its weights are 7-bit (`reduce_range`): there ONNX Runtime's u8 x s8 kernel sums pairs of products in 16
    bits, which full-range weights can saturate (on a tiny Llama: logit error 0.156 full range, 0.030 7-bit).
    """
    if scheme == "weight_only":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(str(onnx_path), bits=8, block_size=WEIGHT_ONLY_BLOCK, is_symmetric=True,
                                         accuracy_level=4)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out_path), use_external_data_format=True)
    elif scheme == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], per_channel=True, use_external_data_format=True,
                         reduce_range=int8_saturates())
    else:
        raise ConfigError([Problem("compile.int8_scheme", f"'{scheme}' is not a scheme; use 'weight_only' or "
                                   "'dynamic'")])
    return out_path


def compare_onnx(reference_path: Path, candidate_path: Path) -> dict[str, Any]:
    """Relative logit error and top-1 agreement of `candidate` against `reference` on one fixed random batch."""
    import numpy as np
    import torch

    from studio_core.export.onnx import ort_session
    from studio_core.train.merge import relative_error

    reference_session = ort_session(reference_path)
    vocab = reference_session.get_outputs()[0].shape[-1]
    vocab = vocab if isinstance(vocab, int) else 32
    ids = np.random.default_rng(ACCURACY_SEED).integers(0, vocab, ACCURACY_SHAPE, dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    reference = torch.from_numpy(reference_session.run(["logits"], feed)[0])
    candidate = torch.from_numpy(ort_session(candidate_path).run(["logits"], feed)[0])
    agreement = (reference.argmax(-1) == candidate.argmax(-1)).float().mean()
    return {"relative_error": relative_error(reference, candidate), "top1_agreement": float(agreement),
            "batch_shape": list(ACCURACY_SHAPE), "seed": ACCURACY_SEED}


def _files(out_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}


# TensorRT -----------------------------------------------------------------------------------------------------


def build_tensorrt(onnx_path: Path, out_dir: Path, precision: str, batch_range: tuple[int, int, int],
                   sequence_range: tuple[int, int, int]) -> dict[str, Any]:
    """A serialized TensorRT engine with one optimization profile over the batch and sequence ranges."""
    import tensorrt as trt  # only reached when the catalog says tensorrt and a CUDA GPU are usable

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads the external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CompileError(f"TensorRT could not parse {onnx_path}: {errors[:1000]}")
    sparse = is_two_four_sparse(onnx_path)
    config, built_precision = builder_config(trt, builder, precision, sparse)
    config.add_optimization_profile(optimization_profile(builder, batch_range, sequence_range))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompileError("TensorRT failed to build the engine (its log above says which layer); try "
                           "compile.precision='fp32' or smaller compile.sequence_range")
    (out_dir / ENGINE_FILE).write_bytes(bytes(serialized))
    return {"backend": "tensorrt", "engine": f"tensorrt-{trt.__version__}-{gpu_slug()}", "engine_file": ENGINE_FILE,
            "precision": built_precision, "sparse_weights": sparse, "files": _files(out_dir),
            "profile": {"batch": list(batch_range), "sequence": list(sequence_range)}}


def builder_config(trt, builder, precision: str, sparse: bool):
    """Builder config with the precision flag where this TensorRT has it (11.x is strongly typed only)."""
    config = builder.create_builder_config()
    flag = {"fp16": "FP16", "bf16": "BF16"}.get(precision)
    built = "fp32"
    if flag and hasattr(trt.BuilderFlag, flag):
        config.set_flag(getattr(trt.BuilderFlag, flag))
        built = precision
    if sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    return config, built


def optimization_profile(builder, batch_range, sequence_range):
    """min/opt/max shapes for both inputs, (batch, sequence)."""
    profile = builder.create_optimization_profile()
    shapes = [tuple(zip(batch_range, sequence_range))[i] for i in range(3)]
    for name in ("input_ids", "attention_mask"):
        profile.set_shape(name, *shapes)
    return profile


def gpu_slug() -> str:
    import torch

    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")


def is_two_four_sparse(onnx_path: Path) -> bool:
    """True when some 2-D weight with at least 4096 values is 2:4 sparse along one of its axes.

    TensorRT's SPARSE_WEIGHTS flag lets it pick sparse kernels per layer, for the layers whose weights qualify, so
    one pruned projection is reason enough; a pruned model keeps dense embeddings and LM head (step 5 never
    prunes them), which an every-weight rule would count against it."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=True)
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 2]
    weights = [w for w in weights if w.size >= 4096 and np.issubdtype(w.dtype, np.floating)]
    return any(_two_four(w) or _two_four(w.T) for w in weights)


def _two_four(weight) -> bool:
    if weight.shape[-1] % 4:
        return False
    groups = (weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1)
    return bool((groups <= 2).all())


def tensorrt_runner(engine_path: Path):
    """Load a serialized engine once; returns run(input_ids, attention_mask) -> logits on CUDA torch tensors."""
    import tensorrt as trt
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise CompileError(f"{engine_path}: TensorRT could not deserialize it (built by another TensorRT version?)")
    context = engine.create_execution_context()
    dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16}
    out_dtype = dtypes[engine.get_tensor_dtype("logits")]

    def run(input_ids, attention_mask):
        for name, tensor in (("input_ids", input_ids.contiguous()), ("attention_mask", attention_mask.contiguous())):
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        logits = torch.empty(tuple(context.get_tensor_shape("logits")), device=input_ids.device, dtype=out_dtype)
        context.set_tensor_address("logits", logits.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise CompileError(f"TensorRT engine {engine_path} failed to run on shape {tuple(input_ids.shape)}")
        stream.synchronize()
        return logits

    return run
