"""The bad-input corpus (issue 9, "Nothing lost, nothing silently wrong").

Every entry breaks one case (``case_0002``) of a small synthetic benchmark in one way (a
damaged file, a misnamed or duplicated one, a folder where a file belongs, ...) and is run
through each input path where it applies: reference side and prediction side, ``structures``
layout and ``labelmap`` layout. Each run asserts the exact outcome (the status of the
affected rows, a message that says what happened, the case status) and that everything the
problem does not touch (the case's other structures, the other cases) is still scored ``ok``.
The expected outcomes are the rules of the README ("Nothing is lost"); the near_perfect
predictions score ``ok`` everywhere when nothing is broken (test_scoring.py).

After the corpus: the run-level findings of the issue (changed inputs are rescored, options
are checked before any work, a folder of model folders is refused).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from assay import cli
from assay.datasets import DEFAULT_SCHEMA, read_label_map_spec
from assay.metrics import PROFILES
from assay.scoring import score
from assay.store import ResultStore
from assay.synthetic import STRUCTURES, write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
N_METRICS = len(PROFILES["default"].metrics)
CASE = "case_0002"
OTHERS = ("case_0001", "case_0003")
SIDES = ("reference", "prediction")


@pytest.fixture(scope="module")
def benches(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("corpus")
    return {
        "structures": write_benchmark(root / "a", n_cases=3, models=("near_perfect",), **SMALL),
        "labelmap": write_benchmark(
            root / "b", n_cases=3, models=("near_perfect",), layout="labelmap", **SMALL
        ),
    }


# -- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """Where an entry breaks things: the side's (copied) root and its ``case_0002``."""

    root: Path
    layout: str
    side: str
    structure: str

    @property
    def case_dir(self) -> Path:  # structures layout
        return self.root / CASE

    @property
    def mask_dir(self) -> Path:  # references keep masks in segmentations/, predictions flat
        seg = self.case_dir / "segmentations"
        return seg if seg.is_dir() else self.case_dir

    @property
    def target(self) -> Path:
        """The file an entry damages: the structure's mask, or the case's label map."""
        if self.layout == "labelmap":
            return self.root / f"{CASE}.nii.gz"
        return self.mask_dir / f"{self.structure}.nii.gz"


@dataclass(frozen=True)
class Expect:
    """The outcome of one (entry, side, layout).

    ``status`` is that of every row of the target structure (``scope="structure"``) or of
    every structure of the case (``scope="case"``); None: the case is not stored at all.
    ``message`` must be found (``re.search``) in each of those rows' messages, ``case_message``
    in the case's. Rows outside the scope are ``ok``.
    """

    status: str | None
    message: str
    case_status: str | None
    scope: str = "structure"
    case_message: str = ""
    note: str = ""


@dataclass(frozen=True)
class Entry:
    name: str
    apply: Callable[[Ctx], None]
    outcomes: dict[tuple[str, str], Expect]
    structure: str = "spleen"


def _rewrite(path: Path, fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]):
    img = nib.load(path)
    array, affine = fn(np.asarray(img.dataobj).copy(), img.affine.copy())
    path.unlink()
    nib.save(nib.Nifti1Image(array, affine), path)


def _truncate(c: Ctx) -> None:
    data = c.target.read_bytes()
    c.target.write_bytes(data[: len(data) // 2])


def _garbage_gz(c: Ctx) -> None:
    c.target.write_bytes(gzip.compress(b"not a nifti file at all"))


def _zero_bytes(c: Ctx) -> None:
    c.target.write_bytes(b"")


def _non_binary(c: Ctx) -> None:
    _rewrite(c.target, lambda a, aff: (np.where(a > 0, 2, 0).astype(np.uint8), aff))


def _nan_mask(c: Ctx) -> None:
    def fn(a: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = a.astype(np.float32)
        out[0, 0, 0] = np.nan
        return out, aff

    _rewrite(c.target, fn)


def _non_integer_labels(c: Ctx) -> None:
    _rewrite(c.target, lambda a, aff: (np.where(a == 1, 1.5, a).astype(np.float32), aff))


def _four_d(c: Ctx) -> None:
    _rewrite(c.target, lambda a, aff: (np.stack([a, a], axis=-1), aff))


def _other_spacing(c: Ctx) -> None:
    def fn(a: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        aff[0, 0] = 7.0  # 8 mm -> 7 mm along the first axis, same origin
        return a, aff

    _rewrite(c.target, fn)


def _other_shape(c: Ctx) -> None:
    _rewrite(c.target, lambda a, aff: (a[:, :, :-1], aff))


def _degenerate_grid(c: Ctx) -> None:
    """A header whose first voxel axis has length 0 (srow_x = 0): readable, but every
    distance along that axis would be 0."""
    img = nib.load(c.target)
    raw = bytearray(nib.Nifti1Image(np.asarray(img.dataobj), img.affine).to_bytes())
    raw[280:296] = np.zeros(4, dtype="<f4").tobytes()  # srow_x: bytes 280-295 of the header
    c.target.write_bytes(gzip.compress(bytes(raw)))


def _all_zero(c: Ctx) -> None:
    _rewrite(c.target, lambda a, aff: (np.zeros_like(a), aff))


def _misnamed(c: Ctx) -> None:
    c.target.rename(c.target.with_name("splen.nii.gz"))


def _copy_as(*names: str) -> Callable[[Ctx], None]:
    def apply(c: Ctx) -> None:
        for name in names:
            shutil.copy(c.target, c.mask_dir / name)

    return apply


def _uncompressed_twin(c: Ctx) -> None:
    twin = c.target.with_name(c.target.name.removesuffix(".gz"))
    twin.write_bytes(gzip.decompress(c.target.read_bytes()))


def _in_both_folders(c: Ctx) -> None:
    if c.mask_dir.name == "segmentations":  # reference: a copy beside segmentations/
        shutil.copy(c.target, c.case_dir / c.target.name)
    else:  # prediction: a copy in a segmentations/ folder
        target = c.target
        (c.case_dir / "segmentations").mkdir()
        shutil.copy(target, c.case_dir / "segmentations" / target.name)


def _empty_segmentations_folder(c: Ctx) -> None:
    seg = c.case_dir / "segmentations"
    if seg.is_dir():  # reference: masks beside an emptied segmentations/
        for f in seg.iterdir():
            f.rename(c.case_dir / f.name)
    else:
        seg.mkdir()


def _remove(c: Ctx) -> None:
    c.target.unlink()


def _empty_case_folder(c: Ctx) -> None:
    shutil.rmtree(c.case_dir)
    c.case_dir.mkdir()


def _nested(c: Ctx) -> None:
    (c.mask_dir / "extra").mkdir()
    c.target.rename(c.mask_dir / "extra" / c.target.name)


def _file_for_folder(c: Ctx) -> None:
    """A stray file where a case folder belongs (structures layout)."""
    mask = c.target.read_bytes()
    shutil.rmtree(c.case_dir)
    (c.root / f"{CASE}.nii.gz").write_bytes(mask)


def _folder_for_file(c: Ctx) -> None:
    """A case folder where a label map belongs (labelmap layout)."""
    c.case_dir.mkdir()
    shutil.move(c.target, c.case_dir / "spleen.nii.gz")


def _broken_link(c: Ctx) -> None:
    c.target.unlink()
    c.target.symlink_to(c.root / "nowhere.nii.gz")


def _broken_case_link(c: Ctx) -> None:
    shutil.rmtree(c.case_dir)
    c.case_dir.symlink_to(c.root / "nowhere")


def _unknown_label_value(c: Ctx) -> None:
    def fn(a: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a[:3, :3, :3] = 12
        return a, aff

    _rewrite(c.target, fn)


S, L = "structures", "labelmap"
R, P = "reference", "prediction"


def _both(expect_ref: Expect, expect_pred: Expect, layout: str) -> dict:
    return {(R, layout): expect_ref, (P, layout): expect_pred}


def _unreadable(detail: str) -> dict[tuple[str, str], Expect]:
    """A file that cannot be read: its structure fails (structures layout) or its whole case
    (labelmap layout); on the reference side the message says it is the reference."""
    mask = rf"Cannot read image \S*/spleen\.nii\.gz: {detail}"
    label_map = rf"Cannot read image \S*/case_0002\.nii\.gz: {detail}"
    return {
        **_both(Expect("failed", "^Reference problem: " + mask, "failed"),
                Expect("failed", "^" + mask, "failed"), S),
        **_both(Expect("failed", label_map, "failed", "case"),
                Expect("failed", label_map, "failed", "case"), L),
    }  # fmt: skip


CORPUS = [
    Entry("truncated_gz", _truncate, _unreadable(
        r"the file is truncated, corrupt or not a \.nii\.gz image \(EOFError: compressed data "
        r"ended before the end-of-stream marker\)")),
    Entry("garbage_gz", _garbage_gz, _unreadable(
        r"not a NIfTI file \(header size field is neither 348 nor 540, file has 23 bytes after "
        r"decompression\)")),
    Entry("zero_bytes", _zero_bytes, _unreadable(
        r"not a NIfTI file \(header size field is neither 348 nor 540, file has 0 bytes")),
    Entry("non_binary_mask", _non_binary, _both(
        Expect("failed", r"Reference problem: Non-binary mask .*found values \[0, 2\]", "failed"),
        Expect("failed", r"Non-binary mask .*found values \[0, 2\]", "failed"), S)),
    Entry("nan_in_mask", _nan_mask, _both(
        Expect("failed", r"Reference problem: Non-binary mask .*nan", "failed"),
        Expect("failed", r"Non-binary mask .*nan", "failed"), S)),
    Entry("non_integer_label_map", _non_integer_labels, _both(
        Expect("failed", "non-integer values", "failed", "case"),
        Expect("failed", "non-integer values", "failed", "case"), L)),
    Entry("four_d", _four_d, {
        **_both(Expect("failed", r"Reference problem: Image .* is 4-D", "failed"),
                Expect("failed", r"Image .* is 4-D", "failed"), S),
        **_both(Expect("failed", "is 4-D", "failed", "case"),
                Expect("failed", "is 4-D", "failed", "case"), L),
    }),
    Entry("other_spacing", _other_spacing, {
        **_both(Expect("failed", "on a different grid than the case's other reference files",
                       "failed"),
                Expect("failed", r"Geometry mismatch for case 'case_0002', structure 'spleen': "
                       r".*spacing prediction \(7, 8, 10\) mm vs reference \(8, 8, 10\) mm",
                       "failed"), S),
        **_both(Expect("failed", r"spacing prediction \(8, 8, 10\) mm vs reference \(7, 8, 10\)",
                       "failed", "case"),
                Expect("failed", r"spacing prediction \(7, 8, 10\) mm vs reference \(8, 8, 10\)",
                       "failed", "case"), L),
    }),
    Entry("other_shape", _other_shape, {
        **_both(Expect("failed", "on a different grid than the case's other reference files",
                       "failed"),
                Expect("failed", r"shape prediction \(48, 48, 31\) vs reference \(48, 48, 32\)",
                       "failed"), S),
        **_both(Expect("failed", r"shape prediction \(48, 48, 32\) vs reference \(48, 48, 31\)",
                       "failed", "case"),
                Expect("failed", r"shape prediction \(48, 48, 31\) vs reference \(48, 48, 32\)",
                       "failed", "case"), L),
    }),
    Entry("degenerate_grid", _degenerate_grid, {
        **_both(Expect("failed", r"Reference problem: Image .* has a degenerate voxel grid "
                       r"\(spacing \(0\.0, 8\.0, 10\.0\) mm", "failed"),
                Expect("failed", "has a degenerate voxel grid", "failed"), S),
        **_both(Expect("failed", "has a degenerate voxel grid", "failed", "case"),
                Expect("failed", "has a degenerate voxel grid", "failed", "case"), L),
    }),
    Entry("all_zero_mask", _all_zero, _both(
        Expect("empty_reference", "^$", "ok"), Expect("empty_prediction", "^$", "ok"), S)),
    Entry("unknown_structure_name", _misnamed, _both(
        Expect("failed", r"Reference problem: Unknown structure 'splen' in file .*splen\.nii\.gz",
               "failed"),
        Expect("missing_prediction", r"holds files named after no known structure "
               r"\(splen\.nii\.gz\): rename the one meant for it", "partial",
               case_message=r"Unknown structure 'splen'"), S)),
    Entry("two_synonyms", _copy_as("ivc.nii.gz"), _both(
        Expect("failed", r"Reference problem: Two files for structure 'postcava' in case "
               r"'case_0002' \(reference\): segmentations/ivc\.nii\.gz, "
               r"segmentations/postcava\.nii\.gz; keep one\.$", "failed"),
        Expect("failed", r"^Two files for structure 'postcava' in case 'case_0002' "
               r"\(prediction\): ivc\.nii\.gz, postcava\.nii\.gz; keep one\.$", "failed"), S),
        structure="postcava"),
    Entry("three_synonyms", _copy_as("ivc.nii.gz", "inferior_vena_cava.nii.gz"), _both(
        Expect("failed", r"Three files for structure 'postcava' .*: "
               r"segmentations/inferior_vena_cava\.nii\.gz, segmentations/ivc\.nii\.gz, "
               r"segmentations/postcava\.nii\.gz; keep one\.$", "failed"),
        Expect("failed", r"^Three files for structure 'postcava' in case 'case_0002' "
               r"\(prediction\): inferior_vena_cava\.nii\.gz, ivc\.nii\.gz, postcava\.nii\.gz; "
               r"keep one\.$", "failed"), S),
        structure="postcava"),
    Entry("case_variant_name", _copy_as("Spleen.nii.gz"), _both(
        Expect("failed", r"Two files for structure 'spleen' .*: segmentations/Spleen\.nii\.gz, "
               r"segmentations/spleen\.nii\.gz", "failed"),
        Expect("failed", r"Two files for structure 'spleen' .*: Spleen\.nii\.gz, spleen\.nii\.gz",
               "failed"), S)),
    Entry("nii_and_nii_gz", _uncompressed_twin, {
        **_both(Expect("failed", r"Two files for structure 'spleen' .*: "
                       r"segmentations/spleen\.nii, segmentations/spleen\.nii\.gz", "failed"),
                Expect("failed", r"Two files for structure 'spleen' .*: spleen\.nii, "
                       r"spleen\.nii\.gz", "failed"), S),
        **_both(Expect("failed", r"Reference problem: Two label maps for case 'case_0002' in "
                       r".* \(reference\): case_0002\.nii, case_0002\.nii\.gz; keep one\.",
                       "failed", "case"),
                Expect("failed", r"^Two label maps for case 'case_0002' in .* \(prediction\): "
                       r"case_0002\.nii, case_0002\.nii\.gz; keep one\.$", "failed", "case"), L),
    }),
    Entry("in_case_folder_and_segmentations", _in_both_folders, _both(
        Expect("failed", r"Two files for structure 'spleen' in case 'case_0002' \(reference\): "
               r"segmentations/spleen\.nii\.gz, spleen\.nii\.gz; keep one\.", "failed"),
        Expect("failed", r"Two files for structure 'spleen' in case 'case_0002' \(prediction\): "
               r"segmentations/spleen\.nii\.gz, spleen\.nii\.gz; keep one\.", "failed"), S)),
    Entry("empty_segmentations_folder", _empty_segmentations_folder, _both(
        Expect("ok", "^$", "ok", "case"), Expect("ok", "^$", "ok", "case"), S)),
    Entry("structure_file_missing", _remove, _both(
        Expect("empty_reference", "^$", "ok"),  # absent from the reference = empty there
        Expect("missing_prediction", r"No prediction file for case 'case_0002', structure "
               r"'spleen' in .*case_0002; write one", "partial"), S)),
    Entry("label_map_missing", _remove, _both(
        Expect(None, "", None, note=r"1 prediction case\(s\) have no reference"),
        Expect("missing_prediction", "No prediction for case 'case_0002'", "missing_prediction",
               "case"), L)),
    Entry("empty_case_folder", _empty_case_folder, _both(
        Expect("failed", r"No readable reference mask for case 'case_0002': its reference "
               "folder holds no mask files", "failed", "case"),
        Expect("missing_prediction", "No prediction for case 'case_0002'", "missing_prediction",
               "case"), S)),
    Entry("image_in_a_nested_folder", _nested, _both(
        Expect("failed", r"Reference problem: Unexpected image file .*extra/spleen\.nii\.gz",
               "failed"),
        Expect("missing_prediction", r"could not be used \(Unexpected image file "
               r".*extra/spleen\.nii\.gz", "partial"), S)),
    Entry("file_where_a_case_folder_belongs", _file_for_folder, _both(
        Expect("failed", r"Unexpected image file .*case_0002\.nii\.gz .*--layout labelmap",
               "failed", "case"),
        Expect("missing_prediction", "No prediction for case 'case_0002'", "missing_prediction",
               "case", case_message=r"case_0002\.nii\.gz .*--prediction-layout labelmap"), S)),
    Entry("folder_where_a_label_map_belongs", _folder_for_file, _both(
        Expect("failed", r"found a folder case_0002/\. Use --layout structures", "failed",
               "case"),
        Expect("missing_prediction", "No prediction for case 'case_0002'", "missing_prediction",
               "case", case_message=r"found a folder case_0002/\. Use --prediction-layout "
               "structures"), L)),
    Entry("broken_link", _broken_link, _unreadable("no such file")),
    Entry("broken_case_folder_link", _broken_case_link, _both(
        Expect("failed", r"The case folder .*case_0002 \(reference\) is a broken link", "failed",
               "case"),
        Expect("missing_prediction", "No prediction for case 'case_0002'", "missing_prediction",
               "case", case_message=r"case_0002 \(prediction\) is a broken link"), S)),
    Entry("unknown_label_value", _unknown_label_value, _both(
        Expect("ok", "^$", "partial", "case",
               case_message=r"Reference label map of case 'case_0002' holds label values .*"
               r"values above 9, up to 12"),
        Expect("ok", "^$", "partial", "case",
               case_message=r"Prediction label map of case 'case_0002' holds label values .*"
               r"values above 9, up to 12"), L)),
]  # fmt: skip

PARAMS = [
    pytest.param(entry, side, layout, id=f"{entry.name}-{side}-{layout}")
    for entry in CORPUS
    for (side, layout) in entry.outcomes
]


@pytest.mark.parametrize(("entry", "side", "layout"), PARAMS)
def test_corpus(tmp_path: Path, benches, entry: Entry, side: str, layout: str) -> None:
    bench = benches[layout]
    expect = entry.outcomes[(side, layout)]
    ref, pred = bench.reference, bench.predictions["near_perfect"]
    broken = shutil.copytree(ref if side == R else pred, tmp_path / side, symlinks=True)
    ref, pred = (broken, pred) if side == R else (ref, broken)
    entry.apply(Ctx(root=broken, layout=layout, side=side, structure=entry.structure))
    kwargs = {}
    if layout == L:
        kwargs = {"labels": read_label_map_spec(bench.labels, DEFAULT_SCHEMA), "layout": L,
                  "prediction_layout": L}  # fmt: skip
    else:
        kwargs = {"layout": S, "prediction_layout": S}
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(ref, pred, model="m", dataset="d", store=store, **kwargs)

    rows = store.scores(run_ids=[report.run_id])
    cases = store.cases([report.run_id]).set_index("case_id")
    # the other cases are untouched: every row ok
    for other in OTHERS:
        assert cases.loc[other, "status"] == "ok", cases.loc[other, "message"]
        others = rows[rows["case_id"] == other]
        assert len(others) == len(STRUCTURES) * N_METRICS
        assert (others["status"] == "ok").all()
    if expect.note:
        assert any(re.search(expect.note, n) for n in report.notes), report.notes
    if expect.status is None:
        assert CASE not in cases.index and (rows["case_id"] != CASE).all()
        return
    case_rows = rows[rows["case_id"] == CASE]
    assert len(case_rows) == len(STRUCTURES) * N_METRICS  # nothing lost
    hit = (
        case_rows
        if expect.scope == "case"
        else case_rows[case_rows["structure"] == entry.structure]
    )
    assert (hit["status"] == expect.status).all(), hit[["structure", "status", "message"]]
    for message in hit["message"]:
        assert "\n" not in message
        assert re.search(expect.message, message), message
    rest = case_rows.drop(hit.index)
    assert (rest["status"] == "ok").all(), rest[["structure", "status", "message"]]
    case = cases.loc[CASE]
    assert case["status"] == expect.case_status, case["message"]
    if expect.case_message:
        assert re.search(expect.case_message, case["message"]), case["message"]
    assert "\n" not in case["message"]


def test_duplicates_name_every_file_in_strict_discovery(tmp_path: Path, benches) -> None:
    """Without a problems dict (a library caller), a duplicate raises, naming all files."""
    from assay.datasets import discover_cases
    from assay.errors import InputError

    pred = shutil.copytree(benches[S].predictions["near_perfect"], tmp_path / "p")
    for name in ("ivc.nii.gz", "inferior_vena_cava.nii.gz"):
        shutil.copy(pred / CASE / "postcava.nii.gz", pred / CASE / name)
    with pytest.raises(InputError, match=re.escape(
        "Three files for structure 'postcava' in case 'case_0002' (prediction): "
        "inferior_vena_cava.nii.gz, ivc.nii.gz, postcava.nii.gz; keep one."
    )):  # fmt: skip
        discover_cases(pred, role="prediction")


def test_combined_label_map_beside_segmentations_is_not_a_structure(tmp_path: Path, benches):
    """AbdomenAtlas keeps combined_labels.nii.gz beside ct.nii.gz and segmentations/: it is
    neither a structure nor a problem; a structure-named file there is read too."""
    ref = shutil.copytree(benches[S].reference, tmp_path / "ref")
    for case in ("case_0001", "case_0002", "case_0003"):
        shutil.copy(ref / case / "ct.nii.gz", ref / case / "combined_labels.nii.gz")
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(ref, benches[S].predictions["near_perfect"], model="m", dataset="d",
                   store=store)  # fmt: skip
    assert (store.cases([report.run_id])["status"] == "ok").all()
    assert (store.scores(run_ids=[report.run_id])["status"] == "ok").all()


# -- run-level findings ---------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    monkeypatch.setattr(cli._common, "out", Console(width=1000))
    monkeypatch.setattr(cli._common, "err", Console(stderr=True, width=1000))


def _cli(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


def _score_args(ref: Path, pred: Path, db: Path, *extra: str) -> list[str | Path]:
    return ["score", "--reference", ref, "--predictions", pred, "--model", "m", "--dataset", "d",
            "--db", db, *extra]  # fmt: skip


def _errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _values(db: Path) -> pd.Series:
    return ResultStore(db).scores().set_index(["case_id", "structure", "metric"])["value"]


def test_changed_predictions_are_rescored(tmp_path: Path, benches) -> None:
    """Finding 3: files that change after a run are scored again on the next one, and the
    stored values then equal a fresh run on the changed files; a touch alone rescores
    nothing (the content fingerprint is equal)."""
    pred = shutil.copytree(benches[S].predictions["near_perfect"], tmp_path / "pred")
    ref = benches[S].reference
    db = tmp_path / "r.db"
    first = _cli(*_score_args(ref, pred, db))
    assert first.exit_code == 0, first.output
    assert "3 cases, 3 scored now, 0 already stored" in first.stdout
    before = _values(db)
    shutil.copy(pred / "case_0001" / "liver.nii.gz", pred / "case_0002" / "liver.nii.gz")
    shutil.copy(pred / "case_0001" / "spleen.nii.gz", pred / "case_0003" / "spleen.nii.gz")
    second = _cli(*_score_args(ref, pred, db))
    assert second.exit_code == 0, second.output
    assert "3 cases, 2 scored now, 1 already stored" in second.stdout
    assert "note: 2 cases changed since the last run: rescored (case_0002, case_0003)" in (
        second.stdout
    )
    fresh = tmp_path / "fresh.db"
    assert _cli(*_score_args(ref, pred, fresh)).exit_code == 0
    after = _values(db)
    pd.testing.assert_series_equal(after, _values(fresh))
    # another case's liver mask: Dice well below near_perfect's (the old value is gone)
    assert after[("case_0002", "liver", "dsc")] < before[("case_0002", "liver", "dsc")] - 0.1
    assert after[("case_0001", "liver", "dsc")] == before[("case_0001", "liver", "dsc")]

    for f in (pred / "case_0001").iterdir():
        os.utime(f)  # touched, same bytes
    third = _cli(*_score_args(ref, pred, db))
    assert "3 cases, 0 scored now, 3 already stored" in third.stdout
    assert "changed" not in third.stdout


def test_changed_reference_is_rescored_and_interruption_keeps_nothing_stale(
    tmp_path: Path, benches
) -> None:
    """A changed reference file rescores its case too; a run interrupted before it rescored
    a changed case must not leave the old values looking current."""
    ref = shutil.copytree(benches[S].reference, tmp_path / "ref")
    pred = benches[S].predictions["near_perfect"]
    store = ResultStore(tmp_path / "db.sqlite")
    kw = {"model": "m", "dataset": "d", "store": store}
    score(ref, pred, **kw)
    for case in ("case_0001", "case_0003"):
        src = ref / "case_0002" / "segmentations" / "liver.nii.gz"
        shutil.copy(src, ref / case / "segmentations" / "liver.nii.gz")

    class StopError(Exception):
        pass

    def stop(_record: object) -> None:
        raise StopError

    with pytest.raises(StopError):  # killed after rescoring one of the two changed cases
        score(ref, pred, on_case=stop, **kw)
    report = score(ref, pred, **kw)
    assert report.n_scored == 1 and report.n_skipped == 2 and report.changed_cases == ()
    fresh = ResultStore(tmp_path / "fresh.sqlite")
    clean = score(ref, pred, model="m", dataset="d", store=fresh)
    key = ["case_id", "structure", "metric"]
    pd.testing.assert_series_equal(
        store.scores(run_ids=[report.run_id]).set_index(key)["value"],
        fresh.scores(run_ids=[clean.run_id]).set_index(key)["value"],
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--resample", "linear"], "Unknown --resample method 'linear'; expected nearest"),
        (["--layout", "flat"], "Unknown --layout 'flat'; expected one of structures, labelmap"),
        (["--prediction-layout", "x"], "Unknown --prediction-layout 'x'"),
        (["--model", ""], "--model must be a non-empty name (got '')"),
        (["--dataset", ""], "--dataset must be a non-empty name (got '')"),
        (["--dataset", "  "], "--dataset must be a non-empty name (got '  ')"),
        (["--model", " m"], "--model ' m' has leading or trailing spaces; pass 'm'"),
        (["--scheduler", ""], "--scheduler must be a Dask scheduler address"),
        (
            ["--predictions", "/nonexistent/preds"],
            "The prediction folder /nonexistent/preds does not exist",
        ),
        (["--profile", "touchstones"], "Unknown profile 'touchstones'"),
        (["--tolerance-mm", "-1"], "tolerances must be finite and >= 0 mm"),
    ],
)
def test_invalid_options_stop_before_any_work(tmp_path, benches, extra, expected) -> None:
    """Finding 4: one error line, exit status 2, no database written; then the corrected
    command runs (nothing stored by the bad one can block it)."""
    bench = benches[S]
    db = tmp_path / "r.db"
    args = _score_args(bench.reference, bench.predictions["near_perfect"], db)
    for i in range(0, len(extra), 2):  # later options override the defaults
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i : i + 2]
    result = _cli(*args)
    assert result.exit_code == 2, result.output
    errors = _errors(result)
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert not db.exists()
    fixed = _cli(*_score_args(bench.reference, bench.predictions["near_perfect"], db,
                              "--resample", "nearest"))  # fmt: skip
    assert fixed.exit_code == 0, fixed.output


def test_a_run_of_only_failed_cases_does_not_block_other_inputs(tmp_path, benches) -> None:
    """Inputs can change when no stored case would be kept: an empty prediction folder
    (every case missing) followed by the real one scores, without --force."""
    empty = tmp_path / "empty"
    empty.mkdir()
    store = ResultStore(tmp_path / "db.sqlite")
    kw = {"model": "m", "dataset": "d", "store": store}
    score(benches[S].reference, empty, **kw)
    report = score(benches[S].reference, benches[S].predictions["near_perfect"], **kw)
    assert report.n_scored == 3
    assert (store.cases([report.run_id])["status"] == "ok").all()


def test_folder_of_model_folders_is_refused(tmp_path, benches) -> None:
    """Finding 5: --predictions at the parent of the model folders stores nothing and says
    which folder to pass."""
    bench = benches[S]
    parent = tmp_path / "preds"
    shutil.copytree(bench.predictions["near_perfect"], parent / "modelA")
    shutil.copytree(bench.predictions["near_perfect"], parent / "modelB")
    db = tmp_path / "r.db"
    result = _cli(*_score_args(bench.reference, parent, db))
    assert result.exit_code == 2, result.output
    (line,) = _errors(result)
    assert f"No prediction case in {parent} matches a reference case of {bench.reference}" in line
    assert "found 2 (modelA, modelB), expected ids such as case_0001, case_0002, case_0003" in line
    assert "looks like a folder of model folders (modelA/, modelB/ holding cases such as " in line
    assert f"pass one model's folder, e.g. --predictions {parent / 'modelA'}." in line
    assert ResultStore(db).runs().empty


def test_prediction_ids_that_match_no_reference_case_are_refused(tmp_path, benches) -> None:
    """The general case: nnU-Net input names (case_0001_0000.nii.gz) as predictions."""
    bench = benches[L]
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in bench.predictions["near_perfect"].glob("*.nii.gz"):
        shutil.copy(f, pred / f.name.replace(".nii.gz", "_0000.nii.gz"))
    store = ResultStore(tmp_path / "db.sqlite")
    from assay.errors import InputError

    with pytest.raises(InputError, match=re.escape(
        "found 3 (case_0001_0000, case_0002_0000, case_0003_0000), expected ids such as "
        "case_0001, case_0002, case_0003 (3 reference cases). Pass the folder whose entries "
        "are named after the reference cases"
    )):  # fmt: skip
        score(bench.reference, pred, model="m", dataset="d", store=store,
              labels=read_label_map_spec(bench.labels, DEFAULT_SCHEMA))  # fmt: skip
    assert store.runs().empty


def test_predicted_structures_without_reference_are_noted(tmp_path, benches) -> None:
    pred = shutil.copytree(benches[S].predictions["near_perfect"], tmp_path / "pred")
    for case in ("case_0001", "case_0002"):
        shutil.copy(pred / case / "liver.nii.gz", pred / case / "heart.nii.gz")
    report = score(benches[S].reference, pred, model="m", dataset="d",
                   store=ResultStore(tmp_path / "db.sqlite"))  # fmt: skip
    assert (
        "Prediction files for structures the reference does not have were not scored: "
        "heart (2 cases)"
    ) in report.notes
