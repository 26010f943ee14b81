"""Plotly charts of a run's metrics.jsonl lines."""

from __future__ import annotations

import plotly.graph_objects as go


def _series(metrics: list[dict], key: str) -> tuple[list, list]:
    points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None and "step" in m]
    return [p[0] for p in points], [p[1] for p in points]


def loss_chart(runs: dict[str, list[dict]]) -> go.Figure:
    """Training loss as lines and validation loss as marked points, one pair per run."""
    figure = go.Figure()
    for name, metrics in runs.items():
        steps, loss = _series(metrics, "loss")
        figure.add_trace(go.Scatter(x=steps, y=loss, mode="lines", name=f"{name} train"))
        steps, val = _series(metrics, "val_loss")
        figure.add_trace(go.Scatter(x=steps, y=val, mode="lines+markers", name=f"{name} validation",
                                    marker={"size": 9, "symbol": "diamond"}))
    figure.update_layout(title="Loss", xaxis_title="step", yaxis_title="loss", height=360,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def line_chart(metrics: list[dict], key: str, title: str) -> go.Figure:
    steps, values = _series(metrics, key)
    figure = go.Figure(go.Scatter(x=steps, y=values, mode="lines"))
    figure.update_layout(title=title, xaxis_title="step", height=260, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def epsilon_chart(metrics: list[dict], budget: float | None) -> go.Figure:
    """Epsilon spent per step, with the budget as a line where there is one."""
    figure = line_chart(metrics, "epsilon", "Privacy spent (epsilon)")
    if budget is not None:
        figure.add_hline(y=budget, line_dash="dash", annotation_text=f"budget {budget:g}")
    figure.update_layout(height=360, yaxis_title="epsilon")
    return figure


def histogram_chart(histogram: dict, title: str) -> go.Figure:
    edges, counts = histogram.get("edges", []), histogram.get("counts", [])
    labels = [f"{edges[i]}-{edges[i + 1] - 1}" for i in range(len(counts))]
    figure = go.Figure(go.Bar(x=labels, y=counts))
    figure.update_layout(title=title, xaxis_title="tokens", yaxis_title="rows", height=300,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def resource_chart(samples: list[dict]) -> go.Figure:
    """The job's CPU % and resident memory over time (GPU memory too where it was measured), from resources.jsonl."""
    from datetime import datetime

    times = [datetime.fromisoformat(s["time"]) for s in samples]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=times, y=[s.get("rss_mb") for s in samples], mode="lines", name="memory (MB)"))
    if any(s.get("gpu_memory_mb") is not None for s in samples):
        figure.add_trace(go.Scatter(x=times, y=[s.get("gpu_memory_mb") for s in samples], mode="lines",
                                    name="GPU memory (MB)"))
    figure.add_trace(go.Scatter(x=times, y=[s.get("cpu_percent") for s in samples], mode="lines", name="CPU %",
                                yaxis="y2"))
    figure.update_layout(title="Resources of the run's process", height=260, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         yaxis={"title": "MB"}, yaxis2={"title": "CPU %", "overlaying": "y", "side": "right"},
                         legend={"orientation": "h"})
    return figure


def update_curve_chart(curve: list[dict]) -> go.Figure:
    """Step 7's size-vs-quality curve: validation loss against the sparse update file's size, one point per k/d."""
    points = sorted((p for p in curve if p["ratio"] > 0), key=lambda p: p["bytes"])
    figure = go.Figure(go.Scatter(x=[p["bytes"] for p in points], y=[p["val_loss"] for p in points],
                                  mode="lines+markers+text", text=[f"k/d={p['ratio']}" for p in points],
                                  textposition="top center", name="sparse update"))
    base = next((p for p in curve if p["ratio"] == 0), None)
    if base is not None:
        figure.add_hline(y=base["val_loss"], line_dash="dot", annotation_text="base (no update)")
    figure.update_layout(title="Update size against validation loss", xaxis_title="file size (bytes)",
                         xaxis_type="log", yaxis_title="validation loss", height=320,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure
