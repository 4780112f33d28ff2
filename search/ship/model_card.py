"""The model card (README.md) of an export bundle, rendered from templates/model_card.md.j2.

It says what the model is, how well it did on the test split, how to load it with and without
ecgsearch (snippets that run as written), and, when the data is MIT-BIH, the licence and citations
the data requires (the one copy of them is `search.data.mitdb.LICENCE`).
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import jinja2

from search.data.mitdb import LICENCE as MITDB_LICENCE

TEMPLATE = "model_card.md.j2"
# The test metrics the card lists, in this order (all of them are in metrics.json).
CARD_METRICS = ("roc_auc", "pr_auc", "f1_macro", "f1_0", "f1_1", "precision_macro", "recall_macro", "accuracy")


def is_mitdb(meta: dict[str, Any], source: str = "") -> bool:
    """Whether the dataset's meta (or source) says it was derived from the MIT-BIH database."""
    text = (json.dumps(meta, default=str) + " " + source).lower()
    return "mitdb" in text or "mit-bih" in text


def format_number(value: Any) -> str:
    """Four decimals for metrics; 'n/a' for a missing or undefined one (ROC-AUC of a one-class split)."""
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4f}"
    if value is None:
        return "n/a"
    return str(value)


def format_cost(value: Any, name: str) -> str:
    """A count whole with separators, a latency in ms, a metric as `format_number`; '—' where not measured."""
    if value is None:
        return "—"
    if name in ("params", "flops"):
        return f"{value:,.0f}"
    if name == "latency_ms":
        return f"{value:.3f} ms"
    return format_number(float(value))


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("search.ship", "templates"),
        autoescape=False,  # Markdown, not HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["fmt"] = format_number
    environment.filters["json"] = json.dumps
    environment.filters["cost"] = format_cost
    return environment


def render_model_card(cfg: dict[str, Any], metrics: dict[str, Any], *, bundle_name: str, mitdb: bool) -> str:
    """The card for a bundle folder named `bundle_name` with this config.json and metrics.json content."""
    versions = ", ".join(f"{name} {found}" for name, found in metrics.get("versions", {}).items() if found)
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            cfg=cfg,
            metrics=metrics,
            name=bundle_name,
            metric_names=CARD_METRICS,
            versions=versions,
            licence=MITDB_LICENCE if mitdb else None,
        )
    )
