"""Step 7 on one process: the hook is not used (and the run says why); the update ships as a sparse top-k file
that loads back, with a size-vs-quality curve whose k/d = 1 point is the merged model itself."""

import json

import pytest
import torch
from safetensors.torch import save_file

from studio_core import workflow
from studio_core.comm.updates import apply_update, load_sparse_update, save_sparse_update, sparsify
from studio_core.config import validate_config
from studio_core.errors import InputError
from tests.train.test_training import tiny_config


def test_sparse_update_file_keeps_the_top_k_entries_per_layer_and_loads_back(tmp_path):
    torch.manual_seed(0)
    updates = {"a.weight": torch.randn(64, 128), "b.weight": torch.randn(32, 32)}
    size = save_sparse_update(tmp_path / "u.safetensors", updates, 0.1)
    back = load_sparse_update(tmp_path / "u.safetensors")
    for name, dense in updates.items():
        kept = back[name] != 0
        assert int(kept.sum()) == -(-dense.numel() // 10) and torch.equal(back[name][kept], dense[kept])
        assert float(dense[~kept].abs().max()) <= float(dense[kept].abs().min())
    dense_bytes = sum(u.numel() * 4 for u in updates.values())
    assert size < 0.25 * dense_bytes  # 8 bytes per kept entry (index + value) and a small header
    index, values = sparsify(updates["b.weight"], 1.0)
    assert index.dtype == torch.int32 and values.numel() == 1024
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="other.safetensors: not a sparse update file"):
        load_sparse_update(tmp_path / "other.safetensors")


def test_one_process_run_says_the_hook_needs_two_and_ships_the_update_with_its_curve(tmp_path):
    data = tiny_config(max_steps=4, eval_steps=2, save_steps=2).model_dump(mode="json")
    data["comm"] = {"enabled": True, "method": "topk", "ratio": 0.1}
    run = workflow.run(validate_config(data), tmp_path)
    report = json.loads((run.artifacts / "comm" / "report.json").read_text())
    assert report["gradients"]["used"] is False and "at least 2 training processes" in report["gradients"]["reason"]
    assert any("at least 2 training processes" in e["message"] for e in run.events() if e["type"] == "warning")
    assert all("comm_bytes" not in m for m in run.metrics())
    update = report["update"]
    assert update["shipped"] == "comm/update.safetensors" and (run.artifacts / update["shipped"]).is_file()
    curve = {p["ratio"]: p for p in update["curve"]}
    assert sorted(curve) == [0.0, 0.01, 0.1, 0.5, 1.0]
    assert curve[1.0]["bytes"] > curve[0.5]["bytes"] > curve[0.1]["bytes"] > curve[0.01]["bytes"] > 0
    # k/d = 1 keeps every entry: the base plus the file is the merged model
    from transformers import AutoModelForCausalLM

    from studio_core.context import RunContext
    from studio_core.evaluate.basic import validation_loss
    from studio_core.train.batching import supervised_rows
    from studio_core.train.lifecycle import fresh_base

    ctx = RunContext(validate_config(data), run, tmp_path, None)
    val = supervised_rows(ctx.prepared_data())[1][: ctx.config.evaluation.max_rows]
    pad = ctx.tokenizer().pad_token_id
    merged = AutoModelForCausalLM.from_pretrained(run.artifacts / "merged")
    assert curve[1.0]["val_loss"] == pytest.approx(validation_loss(merged, val, pad, 2), abs=1e-5)
    base = fresh_base(ctx)
    assert curve[0.0]["val_loss"] == pytest.approx(validation_loss(base, val, pad, 2), abs=1e-5)
    assert curve[0.0]["val_loss"] > curve[1.0]["val_loss"]  # training helped, and the file carries it
    apply_update(base, load_sparse_update(run.artifacts / update["shipped"]))
    assert validation_loss(base, val, pad, 2) == pytest.approx(update["shipped_point"]["val_loss"], abs=1e-5)
    metrics = json.loads((run.artifacts / "eval" / "metrics.json").read_text())
    assert metrics["update_compression"]["curve"] == update["curve"]  # in the evaluation report
