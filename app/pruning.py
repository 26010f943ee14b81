"""Step 5's output from a run: per-layer sparsity and violations, the checks, the quality table, the sizes."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import activity


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def quality_rows(report: dict[str, Any], evaluation: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Dense and pruned base (measured at pruning), pruned + adapter (step 8); dense + adapter is the bench's."""
    q = report.get("quality", {})
    rows = [{"model": label, "val loss": q[key]["val_loss"], "val perplexity": q[key]["val_perplexity"],
             "general-text perplexity": q[key]["general_text_perplexity"], "task metric": None}
            for key, label in (("dense_base", "dense base"), ("pruned_base", "pruned base, no training"))
            if key in q]
    tuned = (evaluation or {}).get("tuned")
    if tuned:
        rows.append({"model": "pruned base + adapter", "val loss": tuned.get("val_loss"),
                     "val perplexity": tuned.get("val_ppl"),
                     "general-text perplexity": report.get("tuned_general_text_perplexity"),
                     "task metric": (tuned.get("task") or {}).get("value")})
    return rows


def pruning_report(report: dict[str, Any], run) -> None:
    checks = report.get("checks", {})
    labels = {"after_pruning": "after pruning", "after_training": "after training", "after_merge": "after merge"}
    cols = st.columns(3)
    for col, (key, label) in zip(cols, labels.items(), strict=True):
        found = checks.get(key)
        col.metric(f"Violating groups {label}", "not reached" if found is None else found["violations"])
    st.markdown(f"**{report['method']}** masks on {len(report['layers'])} layers; masks digest "
                f"`{report['masks_sha256'][:16]}`, pruned base digest `{report['pruned_base_sha256'][:16]}`.")
    st.dataframe([{k: layer.get(k) for k in ("name", "shape", "sparsity", "violations", "merged_sparsity", "adapted")}
                  for layer in report["layers"]], hide_index=True)
    st.subheader("Quality")
    evaluation = activity.read_json(run.artifacts / "eval" / "metrics.json")
    st.dataframe(quality_rows(report, evaluation), hide_index=True)
    st.caption("Dense base + adapter needs a second run without pruning: `bench/sparsity.py` measures all four "
               "(and magnitude against Wanda) in one go.")
    compression = report.get("compression")
    if compression:
        st.subheader("Compressed storage")
        st.markdown(f"Pruned tensors: **{_mib(compression['compressed_bytes'])}** compressed against "
                    f"{_mib(compression['dense_bytes'])} dense (**{compression['ratio']:.3f}x**); at 16 bits "
                    f"{_mib(compression['compressed_bytes_16bit'])} against {_mib(compression['dense_bytes_16bit'])} "
                    f"(**{compression['ratio_16bit']:.4f}x**). Round trip exact: {compression['round_trip_exact']}.")
    st.caption(report.get("speed", ""))
