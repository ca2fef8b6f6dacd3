"""HTML pages of the service: the phase list and a phase's leaderboard (the report site's
look: its stylesheet and sortable tables, served by the service; no external requests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from assay.metrics import metric_title
from assay.service._phase import PhaseConfig


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("assay")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "dev"


def render_leaderboard(board: Mapping[str, Any], phases: Sequence[str], *, title: str) -> str:
    """The leaderboard page of one phase from its released JSON."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("assay.service", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    metrics: list[str] = []
    structures: dict[str, list[str]] = {}
    entries: dict[str, dict[str, dict[str, Any]]] = {}
    for row in board.get("rows", []):
        metric = row["metric"]
        if metric not in metrics:
            metrics.append(metric)
        names = structures.setdefault(metric, [])
        if row["structure"] not in names:
            names.append(row["structure"])
        entry = entries.setdefault(metric, {}).setdefault(
            row["entry"],
            {
                "entry": row["entry"],
                "team": row.get("team", ""),
                "label": row.get("label", ""),
                "rank": None,
                "winner": False,
                "cells": {},
            },
        )
        entry["cells"][row["structure"]] = row
        if row["structure"] == "average":
            entry["rank"] = row.get("rank")
            entry["winner"] = bool(row.get("winner"))
    for metric in metrics:
        names = structures[metric]
        names.sort(key=lambda s: (s != "average", s))
    ordered = {
        m: sorted(entries[m].values(), key=lambda e: (e["rank"] is None, e["rank"] or 0, e["team"]))
        for m in metrics
    }
    labels = {}
    for metric_entries in ordered.values():
        for e in metric_entries:
            labels[e["entry"]] = f"{e['team']} {e['label']}".strip()
    template = env.get_template("leaderboard.html")
    return template.render(
        version=_version(),
        title=title,
        board={
            "method": "",
            "subgroups": None,
            **board,
            "policy": board.get("policy", {"text": ""}),
        },
        phases=list(phases),
        tables=[(m, structures[m]) for m in metrics],
        entries=ordered,
        metric_titles={m: metric_title(m) for m in metrics},
        entry_labels=labels,
    )


def render_index(phases: Sequence[PhaseConfig], *, title: str) -> str:
    """The service's front page: its phases, each with its policy and leaderboard link."""
    items = "".join(
        f'<li><a href="/phases/{escape(p.name)}/leaderboard">{escape(p.name)}</a> '
        f"({escape(p.kind)}{', closed' if p.closed else ''}): {escape(p.policy.describe())}</li>"
        for p in phases
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{escape(title)}</title><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/assets/site.css"></head><body>'
        '<header class="site-header"><div class="bar">'
        f'<a class="brand" href="/">{escape(title)}</a></div></header>'
        f"<main><h1>{escape(title)}</h1><ul>{items or '<li>No phases yet.</li>'}</ul>"
        '<p class="lead">API description: <a href="/v1/openapi.json">/v1/openapi.json</a></p>'
        "</main></body></html>"
    )
