"""Test sets on disk: label schema, label specifications, and case discovery.

* :class:`LabelSchema` / :data:`DEFAULT_SCHEMA` — canonical structure names and synonyms;
* :func:`read_label_map_spec` — label value -> structure from ``dataset.json``/YAML/JSON;
* :func:`discover_cases` / :func:`detect_layout` — find cases in the ``structures`` or
  ``labelmap`` layout, as :class:`StructureFiles` or :class:`LabelMapFile`;
* :class:`DatasetCard` / :func:`load_dataset_card` — licence, citation and version.
"""

from assay.datasets._card import (
    DatasetCard,
    content_hash,
    dataset_card_from_mapping,
    file_sha256,
    load_dataset_card,
)
from assay.datasets._layout import (
    LAYOUTS,
    CaseSource,
    LabelMapFile,
    StructureFiles,
    detect_layout,
    discover_cases,
)
from assay.datasets._schema import (
    DEFAULT_SCHEMA,
    TUMOUR_ORGANS,
    LabelSchema,
    normalise_name,
    read_label_map_spec,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "LAYOUTS",
    "TUMOUR_ORGANS",
    "CaseSource",
    "DatasetCard",
    "LabelMapFile",
    "LabelSchema",
    "StructureFiles",
    "content_hash",
    "dataset_card_from_mapping",
    "detect_layout",
    "discover_cases",
    "file_sha256",
    "load_dataset_card",
    "normalise_name",
    "read_label_map_spec",
]
