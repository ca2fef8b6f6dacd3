"""``assay import ...``: load published results into the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._console import (
    HelpGroup,
    print_table,
)
from assay.cli import _common as common
from assay.cli._common import _fatal_errors, app
from assay.models import load_model_cards
from assay.store import ResultStore, import_touchstone

import_app = typer.Typer(
    no_args_is_help=True,
    help="Import published per-case results.",
    rich_markup_mode=None,
    cls=HelpGroup,
)


app.add_typer(import_app, name="import")


@import_app.command("touchstone")
def import_touchstone_command(
    results_dir: Annotated[Path, typer.Argument(help="Folder of <model_dir>/dsc.csv, nsd.csv.")],
    dataset: Annotated[str, typer.Option(help="Dataset (test set) name.")],
    models: Annotated[Path, typer.Option(help="YAML: model folder -> model card.")],
    metadata: Annotated[Path | None, typer.Option(help="Case metadata CSV (, or ;).")] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Case id column of the metadata (default: first).")
    ] = None,
    db: Annotated[str, typer.Option(help="SQLite file or SQLAlchemy URL.")] = "assay.db",
) -> None:
    """Load a Touchstone-layout results folder and its case metadata into the database."""
    with _fatal_errors():
        report = import_touchstone(
            ResultStore(db), results_dir, dataset=dataset, cards=load_model_cards(models),
            metadata=metadata, id_column=id_column,
        )  # fmt: skip
        table = Table(title=f"Imported into dataset {escape(report.dataset)}")
        for col in ("folder", "model", "cases", "missing predictions"):
            table.add_column(
                col, justify="right" if col in ("cases", "missing predictions") else "left"
            )
        for m in report.models:
            table.add_row(escape(m.folder), escape(m.name), str(m.n_cases), str(m.n_missing))
        print_table(common.out, table)
        common.out.print(
            f"{len(report.models)} models, {len(report.structures)} structures "
            f"({', '.join(report.structures)}), metadata for {report.n_metadata} cases.",
            highlight=False,
        )
