"""All twelve steps that can run here, end to end, on a tiny model: the pipeline a default run grows into."""

import json

from studio_core import workflow
from studio_core.config import validate_config
from studio_core.package import generate_keys, load_public_keys, verify_package


def test_every_available_stage_runs_and_the_package_verifies(tmp_path):
    generate_keys(tmp_path)
    config = validate_config({
        "simulate": True, "model": {"ref": "tiny-random:llama"}, "data": {"demo_rows": 100},
        "pruning": {"enabled": True, "method": "magnitude"}, "comm": {"enabled": True},
        "export": {"enabled": True}, "compile": {"enabled": True}, "package": {"enabled": True},
        "signing": {"enabled": True},
    })
    run = workflow.run(config, tmp_path)
    status = run.read_status()
    ran = {s.name for s in workflow.STAGES if s.run is not None}
    assert {n for n, s in status["stages"].items() if s["state"] == "completed"} == ran
    export = json.loads((run.artifacts / "onnx" / "export.json").read_text())
    assert export["max_relative_error"] < 1e-4 and export["parity"]["passed"]
    engine = json.loads((run.artifacts / "engine" / "compile.json").read_text())
    assert engine["engine"].startswith("onnxruntime-") and engine["tensorrt_not_used"]
    profile = json.loads((run.artifacts / "package" / "payload" / "optimization_profile.json").read_text())
    assert profile["engine"]["engine"] == engine["engine"]
    payload = {p.name for p in (run.artifacts / "package" / "payload").iterdir()}
    assert {"adapter", "merged", "onnx", "engine"} <= payload
    assert verify_package(run.artifacts / "package", load_public_keys(tmp_path)).ok
