"""Export ONNX on the tiny random Llama: parity with PyTorch, a fresh plain-onnxruntime process, NaN refusal."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from studio_core.export.onnx import ExportError, ParityError, check_parity, export_onnx
from studio_core.models.resolve import resolve_model


@pytest.fixture(scope="module")
def merged_dir(model_cache):
    return resolve_model("tiny-random:llama", model_cache).path


@pytest.fixture(scope="module")
def exported(merged_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return out, export_onnx(merged_dir, out, opset=18)


def test_export_writes_graph_with_external_data_and_records_opset(exported):
    out, report = exported
    assert (out / "model.onnx").is_file() and (out / "model.onnx.data").stat().st_size > 100_000
    assert report["external_data"] and report["opset"] == 18
    assert report["inputs"] == ["input_ids", "attention_mask"] and report["outputs"] == ["logits"]
    assert "DynamicCache" in report["kv_cache"]  # says why there is no KV-cache variant


def test_parity_passes_on_several_shapes(merged_dir, exported):
    out, _ = exported
    report = check_parity(merged_dir, out / "model.onnx", shapes=[(1, 8), (2, 17), (3, 33)], seed=7)
    assert [r["shape"] for r in report["shapes"]] == [[1, 8], [2, 17], [3, 33]]
    assert report["passed"] and report["max_relative_error"] < 1e-4


def test_parity_failure_carries_the_numbers(merged_dir, exported):
    out, _ = exported
    with pytest.raises(ParityError, match=r"relative error .* > 1e-12 \(\[1, 8\]: ") as info:
        check_parity(merged_dir, out / "model.onnx", shapes=[(1, 8)], tolerance=1e-12)
    assert info.value.report["shapes"][0]["relative_error"] > 1e-12


FRESH_PROCESS = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort
    ids = np.load(sys.argv[2])
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    np.save(sys.argv[3], session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0])
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")))
""")


def test_export_loads_in_plain_onnxruntime_in_a_fresh_process(merged_dir, exported, tmp_path):
    from studio_core.export.onnx import load_merged

    out, _ = exported
    ids = torch.randint(0, 259, (2, 11), generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "ids.npy", ids.numpy())
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out / "model.onnx"), str(tmp_path / "ids.npy"),
                           str(tmp_path / "logits.npy")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # neither torch nor transformers was needed
    with torch.no_grad():
        reference = load_merged(merged_dir)(input_ids=ids, use_cache=False).logits
    onnx_logits = torch.from_numpy(np.load(tmp_path / "logits.npy"))
    assert float((onnx_logits - reference).abs().max() / reference.abs().max()) < 1e-4


def test_nan_weight_fails_export_naming_the_tensor(merged_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged_dir)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    bad = tmp_path / "bad"
    model.save_pretrained(bad, safe_serialization=True)
    with pytest.raises(ExportError, match=r"model\.layers\.1\.mlp\.down_proj\.weight") as info:
        export_onnx(bad, tmp_path / "onnx")
    assert "NaN or infinity" in str(info.value)
    assert not (tmp_path / "onnx" / "model.onnx").exists()  # refused before exporting

