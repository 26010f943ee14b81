"""Step 10 on a tiny run without step 9: the engines that generate, checked, reported and carried by the package."""

import json

from studio_core.package.verify import verify_package


def test_compile_builds_the_engines_and_the_package_carries_them(tiny_compiled_run):
    run = tiny_compiled_run
    assert run.read_status()["stages"]["compile"]["state"] == "completed"
    report = json.loads((run.artifacts / "engine" / "compile.json").read_text())
    kv, gguf = report["generation"]["onnx_kv"], report["generation"]["gguf"]
    assert report["engines_built"] == [f"{kv['engine']} (int8)", gguf["engine"]] and "backend" not in report
    assert kv["parity"]["passed"] and kv["parity"]["top1_agreement"] >= 0.9
    assert set(gguf["files"]) == {"f16", "q8_0"} and all(q["passed"] for q in gguf["parity"]["quants"].values())
    assert gguf["modelfile"]["from"] == "model-q8_0.gguf"
    payload = run.artifacts / "package" / "payload"
    manifest = json.loads((run.artifacts / "package" / "manifest.json").read_text())
    digests = {r["name"]: r["digest"] for r in manifest["predicate"]["resources"]}
    for entry in gguf["files"].values():
        assert digests[f"engine/gguf/{entry['file']}"] == entry["sha256"]
    assert digests["engine/onnx_kv-int8/model.onnx.data"] == kv["files"]["model.onnx.data"]["sha256"]
    assert (payload / "engine" / "gguf" / "Modelfile").is_file()
    profile = json.loads((payload / "optimization_profile.json").read_text())
    assert profile["engine"]["generation"]["gguf"]["parity"] == gguf["parity"]
    check = verify_package(run.artifacts / "package", [])  # unsigned here: the files against the manifest
    assert not (check.missing or check.changed or check.extra)
