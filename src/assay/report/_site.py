"""The self-contained static HTML site of a report (DESIGN.md §5).

:func:`render_figures` (from :mod:`assay.report._render`) draws every figure of a report
(SVG for the site under ``svg/``; publication PDF/PNG under ``figures/`` when asked);
:func:`write_site`
renders the pages with jinja2 (``templates/*.html``, autoescaped, strict undefined) from the
tables of :mod:`assay.report._tables` and copies the stylesheet and the table-sorting script
(``assets/``) next to them.

The site makes no network request: figures are local SVG files, CSS and JS are local, the
favicon is an empty ``data:`` URL, the co-winner badge is inline SVG (no emoji font needed),
and links to papers and code are plain anchors (never fetched). Every link between pages is
relative, so the folder opens from ``file://``.

Pages: ``index.html`` (warnings, leaderboards of the ``average`` structure per dataset and
metric, a model × structure matrix of means, consensus when several datasets), one page per
(dataset, structure) named ``<dataset>--<structure>.html``, ``stability.html``,
``subgroups.html`` (the summary of significant group differences and the ``average``
structure) with one ``subgroups--<dataset>--<structure>.html`` per other structure,
``speed.html`` (only when inference speed is known) and ``methods.html``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from assay.report import _tables as tables
from assay.report._data import ReportData
from assay.report._render import (
    FIGURE_KINDS,
    FIGURES,
    FigureKey,
    _slice,
    _subgroup_parts,
    figure_stem,
    metric_name,
    page_name,
    render_figures,
    slugify,
)
from assay.stats import AVERAGE

__all__ = ["FIGURE_KINDS", "FigureKey", "figure_stem", "render_figures", "slugify", "write_site"]

_SVG_SIZE = re.compile(
    r"<svg\b[^>]*?\bwidth=\"([\d.]+)(pt|px)?\"[^>]*?\bheight=\"([\d.]+)(pt|px)?\""
)
_PX_PER_PT = 96.0 / 72.0

#: The co-winner badge: an inline SVG trophy; screen readers (and text searches) get "🏆".
TROPHY = Markup(
    '<span class="trophy" role="img" aria-label="co-winner 🏆" title="co-winner">'
    '<svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true" focusable="false">'
    '<path d="M7 5H3.5v1.5A3.5 3.5 0 0 0 7 10M17 5h3.5v1.5A3.5 3.5 0 0 1 17 10" fill="none" '
    'stroke="#9a7400" stroke-width="1.6"/>'
    '<path d="M6.5 3h11v5.5a5.5 5.5 0 0 1-11 0z" fill="#f2c230" stroke="#9a7400" '
    'stroke-width="1.2"/>'
    '<rect x="10.8" y="13.5" width="2.4" height="3.5" fill="#d9a416"/>'
    '<rect x="7.5" y="17" width="9" height="3.5" rx="0.8" fill="#d9a416" stroke="#9a7400" '
    'stroke-width="1"/></svg>'
    '<span class="visually-hidden">🏆</span></span>'
)

#: One-sentence reading hints of the figure kinds (from the registry :data:`FIGURES`).
HINTS = {kind: spec.hint for kind, spec in FIGURES.items()}


def _svg_size(path: Path) -> tuple[int, int]:
    """Intrinsic size of an SVG in CSS px from its root ``width``/``height`` (pt or px)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return 640, 480
    m = _SVG_SIZE.search(head)
    if m is None:
        return 640, 480
    w, wu, h, hu = float(m[1]), m[2], float(m[3]), m[4]
    w *= _PX_PER_PT if wu in (None, "pt") else 1.0
    h *= _PX_PER_PT if hu in (None, "pt") else 1.0
    return max(round(w), 1), max(round(h), 1)


@dataclass
class Fig:
    """A figure on a page: ``src`` relative to the site root, intrinsic size in px, and a
    one-sentence reading ``hint``."""

    src: str
    alt: str
    caption: str
    width: int
    height: int
    hint: str = ""


class _Figures:
    """Looks up figures by key and places them in the site (relative ``src``)."""

    def __init__(self, figures: Mapping[FigureKey, Path], out_dir: Path) -> None:
        self._figures = {tuple(k): Path(v) for k, v in figures.items()}
        self._out = out_dir

    def get(self, key: FigureKey, caption: str) -> Fig | None:
        path = self._figures.get(key)
        if path is None or not path.exists():
            return None
        root = self._out.resolve()
        try:
            rel = path.resolve().relative_to(root)
        except ValueError:  # outside the site: copy it into svg/
            target = self._out / "svg" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            rel = target.resolve().relative_to(root)
        if path.suffix.lower() == ".svg":
            width, height = _svg_size(path)
        else:
            width, height = 640, 480
        hint = HINTS.get(str(key[0]), "")
        return Fig(rel.as_posix(), caption, caption, width, height, hint)

    def many(self, wanted: Sequence[tuple[FigureKey, str]]) -> list[Fig]:
        """The figures among ``wanted`` (key, caption) that exist, in order."""
        found = (self.get(key, caption) for key, caption in wanted)
        return [f for f in found if f is not None]


# --------------------------------------------------------------------------- pages


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("assay.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["slug"] = slugify
    env.filters["trophies"] = _trophies
    env.filters["sentence"] = _sentence
    env.globals["trophy"] = TROPHY
    env.globals["metric_name"] = metric_name
    return env


def _trophies(text: Any) -> Markup:
    """``text`` escaped, every ``🏆`` drawn as the co-winner badge :data:`TROPHY`."""
    return TROPHY.join(escape(part) for part in str(text).split("🏆"))


def _sentence(text: Any) -> str:
    """``text`` ending in exactly one full stop (no ``..`` after a citation)."""
    out = str(text).strip()
    return out if out.endswith((".", "!", "?")) else f"{out}."


def _nav(data: ReportData, has_speed: bool) -> dict[str, Any]:
    structures = []
    for dataset in data.dataset_names:
        names: set[str] = set()
        for a in data.analyses.values():
            names |= set(map(str, _slice(a.aggregates, dataset=dataset)["structure"]))
        ordered = ([AVERAGE] if AVERAGE in names else []) + sorted(names - {AVERAGE})
        structures.append((dataset, [(s, page_name(dataset, s)) for s in ordered]))
    pages = [("index.html", "Overview"), ("stability.html", "Stability")]
    pages.append(("subgroups.html", "Subgroups"))
    if has_speed:
        pages.append(("speed.html", "Speed"))
    pages.append(("methods.html", "Methods"))
    return {"pages": pages, "structures": structures}


def _runs(data: ReportData) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if data.runs.empty:
        return out
    for r in data.runs.to_dict("records"):
        manifest = r.get("manifest")
        protocol = manifest.get("protocol") if isinstance(manifest, Mapping) else None
        out.append(
            {
                "run_id": str(r.get("run_id", "")),
                "dataset": str(r.get("dataset", "")),
                "model": str(r.get("model", "")),
                "profile": str(r.get("profile", "")),
                "protocol": tables.params_items(protocol) if isinstance(protocol, Mapping) else [],
            }
        )
    return out


def _seeds(data: ReportData) -> list[tuple[str, str]]:
    seeds = []
    for metric, a in data.analyses.items():
        boot = a.params.get("bootstrap", {}) if isinstance(a.params, Mapping) else {}
        seed = boot.get("seed") if isinstance(boot, Mapping) else None
        seeds.append((f"bootstrap ({metric})", "—" if seed is None else str(seed)))
    if "seed" in data.options:
        seeds.append(("options", str(data.options["seed"])))
    return seeds


def write_site(
    data: ReportData, out_dir: str | Path, figures: Mapping[FigureKey, Path]
) -> list[Path]:
    """Write the HTML pages and their assets into ``out_dir`` (created if needed).

    Parameters
    ----------
    data : the report's inputs.
    out_dir : the site folder; figures given by ``figures`` inside it are linked in place,
        figures outside it are copied into ``out_dir/svg/``.
    figures : :data:`FigureKey` -> figure file (as returned by :func:`render_figures`);
        a missing key leaves that figure out of its page.

    Returns
    -------
    list of Path
        The pages written (``index.html``, the structure pages, ``stability.html``,
        ``subgroups.html`` and the per-structure subgroup pages, ``speed.html`` when speed is
        known, ``methods.html``), then the copied assets. Without speed data a stale
        ``speed.html`` is removed.
    """
    from assay import __version__

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    figs = _Figures(figures, out_dir)
    has_speed = not data.speed.empty
    nav = _nav(data, has_speed)
    common = {"title": data.title, "version": __version__, "nav": nav}
    written: list[Path] = []

    def render(template: str, name: str, **context: Any) -> None:
        html = env.get_template(template).render(**common, current=name, **context)
        path = out_dir / name
        path.write_text(html, encoding="utf-8")
        written.append(path)

    render("index.html", "index.html", **_index_context(data))
    for dataset, pages in nav["structures"]:
        for structure, name in pages:
            blocks = _structure_blocks(data, figs, dataset, structure)
            render("structure.html", name, dataset=dataset, structure=structure, blocks=blocks)
    render("stability.html", "stability.html", blocks=_stability_blocks(data, figs))
    for name, context in _subgroup_pages(data, figs):
        render("subgroups.html", name, **context)
    if has_speed:
        render("speed.html", "speed.html", blocks=_speed_blocks(data, figs))
    else:
        (out_dir / "speed.html").unlink(missing_ok=True)  # a stale page from an earlier run
    render("methods.html", "methods.html", **_methods_context(data))
    written += _copy_assets(out_dir / "assets")
    return written


def _index_context(data: ReportData) -> dict[str, Any]:
    sections = []
    for dataset in data.dataset_names:
        blocks = [
            {
                "metric": metric,
                "leaderboard": tables.leaderboard(data, metric, dataset),
                "matrix": tables.matrix(data, metric, dataset),
            }
            for metric, a in data.analyses.items()
            if not _slice(a.aggregates, dataset=dataset).empty
        ]
        evaluated, total = tables.case_coverage(data, dataset)
        coverage = (
            f"{evaluated} of {total} cases contain at least one evaluated structure; the others "
            "count in no mean."
            if evaluated != total
            else ""
        )
        sections.append(
            {
                "dataset": dataset,
                "card": data.datasets.get(dataset),
                "coverage": coverage,
                "blocks": blocks,
            }
        )
    consensus = [(m, t) for m in data.analyses if (t := tables.consensus(data, m)) is not None]
    warnings = [(m, str(w)) for m, a in data.analyses.items() for w in a.warnings]
    rules = [(m, tables.rule_sentence(a.params)) for m, a in data.analyses.items()]
    return {"sections": sections, "consensus": consensus, "warnings": warnings, "rules": rules}


def _structure_blocks(
    data: ReportData, figs: _Figures, dataset: str, structure: str
) -> list[dict[str, Any]]:
    blocks = []
    for metric, a in data.analyses.items():
        if _slice(a.aggregates, dataset=dataset, structure=structure).empty:
            continue
        label = f"{dataset} · {structure} · {metric_name(metric)}"
        shown = [
            (("heatmap", dataset, metric, structure), f"Significance heatmap — {label}"),
            (("cases", dataset, metric, structure), f"Per-case values — {label}"),
            (("blobs", dataset, metric, structure), f"Rank stability — {label}"),
        ]
        blocks.append(
            {
                "metric": metric,
                "table": tables.structure_table(data, metric, dataset, structure),
                "rankings": tables.rankings_table(data, metric, dataset, structure),
                "pairs": tables.pairwise_table(data, metric, dataset, structure),
                "figures": figs.many(shown),
            }
        )
    return blocks


def _stability_blocks(data: ReportData, figs: _Figures) -> list[dict[str, Any]]:
    blocks = []
    for dataset in data.dataset_names:
        for metric, a in data.analyses.items():
            if _slice(a.stability, dataset=dataset).empty:
                continue
            tau_table, p1_table = tables.stability_tables(data, metric, dataset)
            label = f"{dataset} · {metric_name(metric)}"
            shown = [
                (("tau", dataset, metric, ""), f"Kendall τ — {label}"),
                (("robustness", dataset, metric, AVERAGE), f"Ranking schemes — {label} · average"),
            ]
            blocks.append(
                {
                    "dataset": dataset,
                    "metric": metric,
                    "tau": tau_table,
                    "p_rank1": p1_table,
                    "figures": figs.many(shown),
                }
            )
    return blocks


def subgroup_page_name(dataset: str, structure: str) -> str:
    """File name of the subgroup page of one (dataset, structure); ``subgroups.html`` holds
    the ``average`` structure and the summary."""
    if structure == AVERAGE:
        return "subgroups.html"
    return f"subgroups--{page_name(dataset, structure)}"


def _subgroup_structures(data: ReportData) -> list[tuple[str, str]]:
    """(dataset, structure) of every subgroup page other than ``subgroups.html``."""
    found: dict[str, set[str]] = {}
    for a in data.analyses.values():
        if a.subgroups.empty:
            continue
        for dataset, structure in a.subgroups[["dataset", "structure"]].drop_duplicates().values:
            found.setdefault(str(dataset), set()).add(str(structure))
    return [(d, s) for d in sorted(found) for s in sorted(found[d] - {AVERAGE})]


def _subgroup_blocks(
    data: ReportData, figs: _Figures, structure: str = AVERAGE, dataset: str | None = None
) -> list[dict[str, Any]]:
    """One block per (dataset, metric, grouping) of one structure: its figure (where drawn,
    see :func:`assay.report._render._subgroup_parts`), means with CIs, significant tests."""
    blocks = []
    for ds in data.dataset_names if dataset is None else [dataset]:
        for metric, a in data.analyses.items():
            part = _slice(a.subgroups, dataset=ds, structure=structure)
            if part.empty:
                continue
            drawn = {
                (g, s): key for g, s, key in _subgroup_parts(a.subgroups, a.subgroup_tests, ds)
            }
            for grouping in sorted({str(g) for g in part["grouping"]}):
                means, sig = tables.subgroup_tables(data, metric, ds, grouping, structure)
                label = f"{ds} · {structure} · {metric_name(metric)} by {grouping}"
                key = drawn.get((grouping, structure))
                shown = [] if key is None else [(("subgroup", ds, metric, key), label)]
                blocks.append(
                    {
                        "dataset": ds,
                        "metric": metric,
                        "grouping": grouping,
                        "structure": structure,
                        "means": means,
                        "significant": sig,
                        "figures": figs.many(shown),
                        "drawn": key is not None,
                    }
                )
    return blocks


def _subgroup_pages(data: ReportData, figs: _Figures) -> list[tuple[str, dict[str, Any]]]:
    """(file name, template context) of ``subgroups.html`` and of every per-structure page."""
    gaps = {
        (d, m): tables.subgroup_gaps(data, m, d)["structure"]
        for d in data.dataset_names
        for m in data.analyses
    }
    links: dict[str, list[dict[str, Any]]] = {}
    for dataset, structure in _subgroup_structures(data):
        n = sum(int((g == structure).sum()) for (d, _), g in gaps.items() if d == dataset)
        links.setdefault(dataset, []).append(
            {"structure": structure, "href": subgroup_page_name(dataset, structure), "n": n}
        )
    common = {
        "methods": [(m, tables.subgroup_method(data, m)) for m in data.analyses],
        "links": sorted(links.items()),
    }
    summary = [
        {"dataset": d, "metric": m, "table": tables.subgroup_summary(data, m, d)}
        for d in data.dataset_names
        for m, a in data.analyses.items()
        if not _slice(a.subgroups, dataset=d).empty
    ]
    pages = [
        (
            "subgroups.html",
            {**common, "page_structure": AVERAGE, "page_dataset": "", "summary": summary,
             "blocks": _subgroup_blocks(data, figs)},
        )
    ]  # fmt: skip
    for dataset, structure in _subgroup_structures(data):
        blocks = _subgroup_blocks(data, figs, structure, dataset)
        context = {**common, "page_structure": structure, "page_dataset": dataset,
                   "summary": [], "blocks": blocks}  # fmt: skip
        pages.append((subgroup_page_name(dataset, structure), context))
    return pages


def _speed_blocks(data: ReportData, figs: _Figures) -> list[dict[str, Any]]:
    return [
        {
            "dataset": dataset,
            "table": tables.speed_table(data, dataset),
            "figure": figs.get(("speed", dataset, "", ""), f"Inference speed — {dataset}"),
        }
        for dataset in sorted({str(d) for d in data.speed["dataset"]})
    ]


def _methods_context(data: ReportData) -> dict[str, Any]:
    analyses = [
        {
            "metric": m,
            "params": tables.params_items(
                {k: v for k, v in a.params.items() if k != "training_data"}
            ),
            "changes": tables.changes_table(data, m),
            "warnings": list(a.warnings),
        }
        for m, a in data.analyses.items()
    ]
    models = [
        {
            "name": name,
            "organisation": card.organisation,
            "framework": card.framework,
            "paper": tables._url(card.paper),
            "code": tables._url(card.code),
            "training_data": ", ".join(card.training_data),
        }
        for name, card in sorted(data.cards.items())
    ]
    return {
        "analyses": analyses,
        "runs": _runs(data),
        "seeds": _seeds(data),
        "software": sorted((str(k), str(v)) for k, v in data.software.items()),
        "dataset_cards": [data.datasets[d] for d in sorted(data.datasets)],
        "models": models,
        "options": tables.params_items(
            {k: v for k, v in data.options.items() if k != "training_data"}
        ),
        "training_data": _training_data(data),
        "missing_predictions": tables.missing_predictions(data),
    }


def _training_data(data: ReportData) -> list[tuple[str, str]]:
    """(model, datasets it was trained on) from the analyses' params, once for all metrics."""
    found: dict[str, set[str]] = {}
    for a in data.analyses.values():
        td = a.params.get("training_data") if isinstance(a.params, Mapping) else None
        if isinstance(td, Mapping):
            for model, datasets in td.items():
                found.setdefault(str(model), set()).update(map(str, datasets or ()))
    return [(m, ", ".join(sorted(d)) or "none") for m, d in sorted(found.items())]


def _copy_assets(target: Path) -> list[Path]:
    """Copy the package's ``assets/`` (CSS, JS) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    out = []
    source = resources.files("assay.report") / "assets"
    for item in sorted(source.iterdir(), key=lambda t: t.name):
        if item.is_file() and not item.name.startswith("."):
            path = target / item.name
            path.write_bytes(item.read_bytes())
            out.append(path)
    return out
