"""The results database (SQLite by default, PostgreSQL by URL) and score export."""

from assay.store._export import FORMATS, export_scores
from assay.store._import import ImportReport, import_touchstone, read_metadata
from assay.store._schema import LESION_COLUMNS, SCORE_COLUMNS
from assay.store._store import ResultStore, database_url

__all__ = [
    "FORMATS",
    "LESION_COLUMNS",
    "SCORE_COLUMNS",
    "ImportReport",
    "ResultStore",
    "database_url",
    "export_scores",
    "import_touchstone",
    "read_metadata",
]
