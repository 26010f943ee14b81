"""The KV-cache ONNX engine (onnxruntime-genai's builder, offline): it generates what the model generates."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from studio_core.export.onnx_kv import OnnxKVError, build_onnx_kv, check_onnx_kv, greedy_tokens
from studio_core.models.resolve import resolve_model

og = pytest.importorskip("onnxruntime_genai")


@pytest.fixture(scope="module")
def tiny_llama(model_cache):
    return resolve_model("tiny-random:llama", model_cache).path


def test_fp32_kv_model_generates_what_transformers_generates(tiny_llama, tmp_path):
    report = build_onnx_kv(tiny_llama, tmp_path / "kv", "fp32")
    assert {"genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json"} <= set(report["files"])
    assert all(len(f["sha256"]) == 64 for f in report["files"].values())
    parity = check_onnx_kv(tiny_llama, tmp_path / "kv", "fp32")
    assert parity["top1_agreement"] == 1.0 and parity["relative_error"] < 1e-4
    ids = list(range(40, 60))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    expected = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=None)[0, 20:]
    got = greedy_tokens(og.Model(str(tmp_path / "kv")), ids, 24)
    assert got == expected.tolist()[: len(got)] and len(got) >= 1


def test_int4_kv_model_is_quantized_and_its_agreement_measured(tiny_llama, tmp_path):
    report = build_onnx_kv(tiny_llama, tmp_path / "int4", "int4")
    fp32_weights = (tiny_llama / "model.safetensors").stat().st_size  # the tiny model's fp32 rotary caches stay
    assert report["files"]["model.onnx.data"]["bytes"] < 0.65 * fp32_weights
    assert "MatMulNBits" in (tmp_path / "int4" / "model.onnx").read_bytes().decode("latin-1")
    parity = check_onnx_kv(tiny_llama, tmp_path / "int4", "int4")
    assert 0.7 <= parity["top1_agreement"] < 1.0 and parity["passed"]
    with pytest.raises(OnnxKVError, match="below 1.0; try compile.onnx_kv_precision='int8'") as caught:
        check_onnx_kv(tiny_llama, tmp_path / "int4", "int4", min_top1=1.0)
    assert caught.value.report["top1_agreement"] == parity["top1_agreement"]
