"""Artifacts of a completed trial: training curves and the confusion matrix as plotly HTML.

HTML loads plotly.js from its CDN (a self-contained file is ≈3.5 MB per plot, per trial). A PNG copy
is added only when kaleido is importable; it is not a dependency of ecgsearch.
"""

from __future__ import annotations

import importlib.util
from typing import Any

LOSS_KEYS = ("train_loss", "val_loss")


def kaleido_available() -> bool:
    return importlib.util.find_spec("kaleido") is not None


def log_figure(client: Any, run_id: str, figure: Any, html_path: str) -> None:
    client.log_figure(run_id, figure, html_path)
    if kaleido_available():
        client.log_figure(run_id, figure, html_path.removesuffix(".html") + ".png")


def training_curves(history: list[dict]) -> Any | None:
    """Losses (top) and validation metrics (bottom) per epoch; None when there is nothing to draw."""
    rows = [row for row in history if isinstance(row, dict)]
    if not rows:
        return None
    from plotly.subplots import make_subplots

    epochs = [row.get("epoch", index) for index, row in enumerate(rows, start=1)]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=("loss", "validation metrics"))
    for key in LOSS_KEYS:
        if any(key in row for row in rows):
            figure.add_scatter(x=epochs, y=[row.get(key) for row in rows], name=key, mode="lines+markers", row=1, col=1)
    val_keys = sorted({k for row in rows for k in row if k.startswith("val_") and k not in LOSS_KEYS})
    for key in val_keys:
        figure.add_scatter(x=epochs, y=[row.get(key) for row in rows], name=key, mode="lines+markers", row=2, col=1)
    figure.update_xaxes(title_text="epoch", row=2, col=1)
    figure.update_layout(title="training curves", height=700)
    return figure


def confusion_matrix(matrix: list[list[int]]) -> Any:
    """Rows: true class, columns: predicted class (0 normal, 1 anomalous)."""
    import plotly.graph_objects as go

    labels = ["normal (0)", "anomalous (1)"] if len(matrix) == 2 else [str(i) for i in range(len(matrix))]
    figure = go.Figure(
        go.Heatmap(
            z=matrix, x=labels, y=labels, colorscale="Blues", text=matrix, texttemplate="%{text}", showscale=False
        )
    )
    figure.update_layout(
        title="confusion matrix (validation)",
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        width=520,
        height=480,
    )
    return figure
