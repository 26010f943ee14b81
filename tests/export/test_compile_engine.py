"""Compile on a CPU machine: the ONNX Runtime fallback, the engine name it really built, int8's measured cost."""

import subprocess
import sys
import textwrap
from collections import Counter

import onnxruntime
import pytest

from studio_core.catalog import is_tensorrt_available
from studio_core.errors import ConfigError, MissingBackendError
from studio_core.export.compile import CompileError, _two_four, compile_model
from studio_core.export.onnx import export_onnx
from studio_core.models.resolve import resolve_model

pytestmark = pytest.mark.skipif(is_tensorrt_available(), reason="tests the fallback, on a machine without TensorRT")


@pytest.fixture(scope="module")
def onnx_dir(model_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(resolve_model("tiny-random:llama", model_cache).path, out)
    return out


def test_fallback_builds_an_onnxruntime_optimized_model_and_says_why_not_tensorrt(onnx_dir, tmp_path):
    report = compile_model(onnx_dir, tmp_path / "engine", backend="auto")
    assert report["engine"] == f"onnxruntime-{onnxruntime.__version__}-cpu"
    assert "tensorrt not installed" in report["tensorrt_not_used"] and "no CUDA GPU" in report["tensorrt_not_used"]
    assert (tmp_path / "engine" / "model.onnx").is_file() and (tmp_path / "engine" / "model.onnx.data").is_file()
    assert report["accuracy"]["optimized_vs_onnx"]["relative_error"] < 1e-5
    assert report["accuracy"]["optimized_vs_onnx"]["top1_agreement"] == 1.0


def test_optimized_model_runs_in_a_fresh_plain_onnxruntime_process(onnx_dir, tmp_path):
    compile_model(onnx_dir, tmp_path / "engine", backend="onnxruntime")
    script = textwrap.dedent("""
        import sys, numpy as np, onnxruntime as ort
        ids = np.arange(20, dtype=np.int64).reshape(2, 10)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        a = ort.InferenceSession(sys.argv[1]).run(["logits"], feed)[0]
        b = ort.InferenceSession(sys.argv[2]).run(["logits"], feed)[0]
        print(float(np.abs(a - b).max() / np.abs(a).max()))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(onnx_dir / "model.onnx"),
                           str(tmp_path / "engine" / "model.onnx")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1e-4


@pytest.mark.parametrize(("scheme", "op"), [("weight_only", "MatMulNBits"), ("dynamic", "MatMulInteger")])
def test_int8_quantizes_every_linear_and_reports_its_accuracy_cost(onnx_dir, tmp_path, scheme, op):
    import onnx

    report = compile_model(onnx_dir, tmp_path / "engine", int8=True, int8_scheme=scheme)
    cost = report["accuracy"]["int8_vs_onnx"]
    assert report["engine_file"] == "model.int8.onnx" and "int8" in report["precision"]
    assert ("activations" in report["precision"]) == (scheme == "dynamic")
    assert 0 < cost["relative_error"] < 0.1 and 0.9 <= cost["top1_agreement"] <= 1.0
    assert report["files"]["model.int8.onnx.data"] < report["files"]["model.onnx.data"] / 2
    graph = onnx.load(str(tmp_path / "engine" / "model.int8.onnx"), load_external_data=False).graph
    assert Counter(n.op_type for n in graph.node)[op] == 2 * 7 + 1  # q k v o gate up down in 2 layers, and the head


def test_an_unknown_int8_scheme_names_the_field(onnx_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"compile\.int8_scheme: 'int4' is not a scheme"):
        compile_model(onnx_dir, tmp_path / "engine", int8=True, int8_scheme="int4")


def test_asking_for_tensorrt_without_it_says_how_to_install(onnx_dir, tmp_path):
    with pytest.raises(MissingBackendError, match=r"pip install 'peft-studio\[tensorrt\]'"):
        compile_model(onnx_dir, tmp_path / "engine", backend="tensorrt")


def test_missing_onnx_says_to_run_the_export(tmp_path):
    with pytest.raises(CompileError, match="run step 9"):
        compile_model(tmp_path, tmp_path / "engine")


def test_two_four_detection():
    import numpy as np

    dense = np.ones((8, 8), dtype=np.float32)
    sparse = dense * np.tile([1, 0, 1, 0], (8, 2))
    assert _two_four(sparse) and not _two_four(dense)


def test_unordered_profile_ranges_name_the_field(onnx_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"compile\.sequence_range: \[1, 8, 4\] must be \(min, optimal, max\)"):
        compile_model(onnx_dir, tmp_path / "engine", sequence_range=(1, 8, 4))


@pytest.mark.parametrize("saturates", [True, False])
def test_dynamic_int8_uses_7_bit_weights_exactly_where_the_cpu_would_saturate(onnx_dir, tmp_path, monkeypatch,
                                                                             saturates):
    # On x86 without VNNI onnxruntime's u8 x s8 kernel sums pairs of products in 16 bits; full-range weights
    # saturated there (logit error 0.156 on this tiny Llama, against 0.030 with 7-bit weights).
    import numpy as np
    import onnx
    from onnx import numpy_helper

    import studio_core.export.compile as compile_module

    monkeypatch.setattr(compile_module, "int8_saturates", lambda: saturates)
    report = compile_model(onnx_dir, tmp_path / "engine", int8=True, int8_scheme="dynamic")
    assert report["int8_reduce_range"] is saturates
    assert ("7 bits" in report["precision"]) is saturates
    model = onnx.load(str(tmp_path / "engine" / "model.int8.onnx"), load_external_data=True)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantized = [weights[n.input[1]] for n in model.graph.node if n.op_type == "MatMulInteger" and n.input[1] in weights]
    assert quantized and all(w.dtype == np.int8 for w in quantized)
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in quantized) == (64 if saturates else 127)
