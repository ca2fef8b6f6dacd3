"""Validate an uploaded zip of predictions against a phase's public manifest, before scoring.

Everything here runs without the reference files: it reads only the manifest (case ids,
grids, labels). Checks, in order, each with a fixed rejection code:

1. the archive: a readable zip with nothing before its first entry or after its end record
   (``not_a_zip``: also polyglot files), at most ``max_members`` entries
   (``too_many_members``), central directory entries that do not overlap each other or the
   directory (``overlapping_entries``: the quoted-overlap zip bomb), local headers that agree
   with the directory on name, method, CRC and sizes (``corrupt``);
2. every entry's name and kind: no absolute path, ``..``, backslash, NUL (looked for in the
   raw name, which :mod:`zipfile` cuts at the NUL) or over-long name (``unsafe_path``), no
   symbolic link or device whatever system the entry claims (``link_entry``; a zip's hard
   link, two entries sharing data, is ``overlapping_entries``), no encrypted entry
   (``encrypted``), only stored or deflate (``unsupported_compression``), no archive inside
   the archive (``nested_archive``), no two names equal (``duplicate_name``) or equal after
   case folding and Unicode NFC (``name_collision``);
3. the mapping to cases: ``CASE.nii[.gz]`` label maps or ``CASE/STRUCTURE.nii[.gz]`` masks
   (one layout per archive, ``mixed_layout``), known cases (``unknown_case``) and
   structures (``unknown_structure``), one file per case/structure (``duplicate_case``),
   every case present unless the phase allows missing ones (``missing_cases``), no other
   image files (``unexpected_member``);
4. sizes: each entry's declared size at most the bytes its case can need, header plus
   ``prod(shape) * 8`` (``too_large``), and the same cap enforced while decompressing, the
   zip member (inflated here, never by :mod:`zipfile`, to exactly its declared size: more
   is ``too_large``, less ``truncated``, a wrong CRC ``corrupt``) and the gzip stream inside
   it (``too_large``), whole streams (``truncated``, ``corrupt``);
5. each NIfTI-1 header before any voxel is read (``bad_nifti``: wrong size, magic other
   than single-file ``n+1``, ``dim[0]``, negative dims, ``vox_offset`` (NaN, fractional,
   below 352 or huge), a malformed extension chain, scaling, NaN or unusable affine,
   disagreeing sform and qform, and whatever nibabel's own header checks refuse when the
   scorer reads the file; ``bad_datatype``: complex, RGB, float64 and other non-mask types;
   ``bad_geometry``: shape or affine other than the case's reference grid), so a header that
   claims 30000³ voxels is refused from its 348 bytes;
6. the voxels: whole numbers (``bad_labels``) among the manifest's label values (label maps)
   or 0/1 (masks).

:func:`validate_archive` returns the accepted members; :func:`extract_archive` validates
and writes them, and nothing else, under a destination folder (and nothing at all for a
rejected archive).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from assay.errors import InputError

#: Every rejection code, with what it means (published in the API description).
REJECTIONS: Mapping[str, str] = {
    "too_large": "the upload or an entry is bigger than its cases can need",
    "not_a_zip": "the upload is not a readable zip archive",
    "too_many_members": "the archive has more entries than the phase's cases need",
    "overlapping_entries": "entries of the archive overlap (a zip bomb)",
    "unsafe_path": "an entry name is absolute, climbs with '..', or has a backslash or NUL",
    "link_entry": "an entry is a link or a device, not a regular file",
    "encrypted": "an entry is encrypted",
    "unsupported_compression": "an entry uses a compression other than stored or deflate",
    "nested_archive": "the archive contains another archive",
    "duplicate_name": "two entries have the same name",
    "name_collision": "two entries differ only in letter case or Unicode normalisation",
    "mixed_layout": "the archive mixes label maps and per-structure masks",
    "unknown_case": "an entry is for a case the phase does not have",
    "unknown_structure": "an entry is for a structure the reference set does not have",
    "duplicate_case": "two entries are for the same case (and structure)",
    "missing_cases": "cases of the phase have no prediction",
    "unexpected_member": "an entry is not a NIfTI prediction",
    "truncated": "an entry's data ends early",
    "corrupt": "an entry's data does not decompress or fails its checksum",
    "bad_nifti": "an entry's NIfTI header is invalid",
    "bad_datatype": "an entry's voxel type is not one for masks",
    "bad_geometry": "an entry's grid differs from its case's reference grid",
    "bad_labels": "an entry has voxel values that are not the manifest's labels",
    "attempts_exhausted": "too many rejected uploads in the quota window",
}

_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".7z", ".rar", ".bz2", ".xz", ".zst")
_IMAGE_SUFFIXES = (".nii.gz", ".nii")
#: Bytes a NIfTI-1 header plus extensions may take before the voxels.
_MAX_VOX_OFFSET = 352 + 64 * 1024
_MAX_NAME = 255
#: NIfTI datatype code -> numpy dtype (integers, float32 masks and bool-like uint8).
_DATATYPES = {
    2: np.uint8,
    4: np.int16,
    8: np.int32,
    16: np.float32,
    256: np.int8,
    512: np.uint16,
    768: np.uint32,
    1024: np.int64,
    1280: np.uint64,
}
_GZIP_MAGIC = b"\x1f\x8b"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_END_RECORD = struct.Struct("<4s4H2LH")
_CHUNK = 1 << 20
#: Flag bits: traditional, strong and central-directory encryption; compressed patch data;
#: sizes and CRC in a data descriptor after the data (zero in the local header).
_ENCRYPTED = 0x0001 | 0x0040 | 0x2000
_PATCHED = 0x0020
_DESCRIPTOR = 0x0008
_ZIP64 = 0xFFFFFFFF
#: nibabel's header checks log what they fix; the validator reports refusals itself.
_QUIET = logging.getLogger(__name__ + ".nifti")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class RejectedUpload(InputError):  # noqa: N818 - a rejection, not a bug
    """An upload refused at validation: ``code`` (see :data:`REJECTIONS`) and one line."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Member:
    """An accepted entry: its zip name, case, structure (None for a label map), file name."""

    name: str
    case_id: str
    structure: str | None
    suffix: str


def _reject(code: str, reason: str) -> RejectedUpload:
    return RejectedUpload(code, reason)


def _check_name(name: str) -> None:
    shown = name.encode("unicode_escape").decode("ascii")[:80]
    if "\x00" in name or len(name) > _MAX_NAME or any(len(p) > _MAX_NAME for p in name.split("/")):
        raise _reject("unsafe_path", f"entry {shown!r} has a NUL byte or an over-long name")
    if "\\" in name:
        raise _reject("unsafe_path", f"entry {shown!r} has a backslash; use '/' between folders")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _reject("unsafe_path", f"entry {shown!r} is an absolute path")
    if any(part in ("..", ".") for part in name.rstrip("/").split("/")):
        raise _reject("unsafe_path", f"entry {shown!r} has a '..' or '.' component")


def _check_kind(info: zipfile.ZipInfo) -> None:
    # Unix modes sit in the high word whatever create_system says (macOS writes 19, 7-Zip
    # on Windows 0), and extractors honour them; DOS-only archives leave it 0.
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _reject("link_entry", f"entry {info.filename!r} is a link or device, not a file")
    if info.flag_bits & _ENCRYPTED:
        raise _reject("encrypted", f"entry {info.filename!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _reject(
            "unsupported_compression",
            f"entry {info.filename!r} uses compression method {info.compress_type}; use deflate",
        )
    if info.flag_bits & _PATCHED:
        raise _reject(
            "unsupported_compression", f"entry {info.filename!r} is PKWARE patch data; use deflate"
        )
    lowered = info.filename.lower()
    if lowered.endswith(_ARCHIVE_SUFFIXES) and not lowered.endswith(".nii.gz"):
        raise _reject("nested_archive", f"entry {info.filename!r} is an archive; zip the files")


def _locate(fh: IO[bytes], infos: list[zipfile.ZipInfo], directory_start: int) -> list[int]:
    """Where each entry's data starts. Each entry's local header and data must end before the
    next entry starts (and the directory), the first start at the archive's first byte, and
    each local header agree with the directory."""
    spans = []
    locals_ = []
    for index, info in enumerate(infos):
        if not 0 <= info.header_offset < directory_start:
            raise _reject("corrupt", f"entry {info.filename!r} starts outside the archive's data")
        fh.seek(info.header_offset)
        raw = fh.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
            raise _reject("corrupt", f"entry {info.filename!r} has no local header")
        fields = _LOCAL_HEADER.unpack(raw)
        name_len, extra_len = fields[-2], fields[-1]
        local_name = fh.read(name_len)
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        spans.append((info.header_offset, start + info.compress_size, index, start))
        locals_.append((info, fields, local_name))
    spans.sort()
    for (_, end, i, _), (start, _, j, _) in itertools.pairwise(spans):
        if end > start:
            raise _reject(
                "overlapping_entries",
                f"entries {infos[i].filename!r} and {infos[j].filename!r} overlap",
            )
    if spans and spans[-1][1] > directory_start:
        raise _reject(
            "overlapping_entries", f"entry {infos[spans[-1][2]].filename!r} overlaps the directory"
        )
    if (spans[0][0] if spans else directory_start) != 0:
        raise _reject("not_a_zip", "the upload has data before its first entry (a polyglot file?)")
    for info, fields, local_name in locals_:
        _check_local(info, fields, local_name)
    starts = [0] * len(infos)
    for _, _, index, start in spans:
        starts[index] = start
    return starts


def _check_overlap(fh: IO[bytes], infos: list[zipfile.ZipInfo], directory_start: int) -> None:
    """The checks of :func:`_locate` alone (for :mod:`~assay.service._model_archive`)."""
    _locate(fh, infos, directory_start)


def _check_local(info: zipfile.ZipInfo, fields: tuple[Any, ...], raw_name: bytes) -> None:
    """The local header must say what the directory says (tools that read local headers
    would otherwise see another archive); a data descriptor leaves CRC and sizes 0."""
    flags, method, crc, compressed, size = fields[2], fields[3], fields[6], fields[7], fields[8]
    name = raw_name.decode("utf-8" if info.flag_bits & 0x800 else "cp437", errors="replace")
    described = bool(flags & _DESCRIPTOR)
    agree = (
        name == info.orig_filename
        and method == info.compress_type
        and not (flags ^ info.flag_bits) & (_ENCRYPTED | _PATCHED)
        and crc in (info.CRC, *((0,) if described else ()))
        and compressed in (info.compress_size, _ZIP64, *((0,) if described else ()))
        and size in (info.file_size, _ZIP64, *((0,) if described else ()))
    )
    if not agree:
        raise _reject(
            "corrupt", f"entry {info.filename!r}: its local header disagrees with the directory"
        )


def _check_end(fh: IO[bytes], size: int, comment: bytes) -> None:
    """The end record must be the archive's last bytes (else data hides after it)."""
    at = size - _END_RECORD.size - len(comment)
    raw = b""
    if at >= 0:
        fh.seek(at)
        raw = fh.read(_END_RECORD.size)
    fields = _END_RECORD.unpack(raw) if len(raw) == _END_RECORD.size else (b"",)
    if fields[0] != b"PK\x05\x06" or fields[-1] != len(comment):
        raise _reject("not_a_zip", "the upload has data after its end record (a polyglot file?)")


def _split(name: str, top: str) -> tuple[str, ...]:
    return tuple(name[len(top) :].split("/"))


def _image_stem(file: str) -> tuple[str, str] | None:
    lowered = file.lower()
    for suffix in _IMAGE_SUFFIXES:
        if lowered.endswith(suffix):
            return file[: -len(suffix)], suffix
    return None


def plan_members(
    infos: list[zipfile.ZipInfo], manifest: Mapping[str, Any], *, allow_missing: bool
) -> list[tuple[zipfile.ZipInfo, Member]]:
    """Map entries to (case, structure) after the name and kind checks (codes of step 3)."""
    files = [i for i in infos if not i.is_dir()]
    seen: dict[str, str] = {}
    for info in files:
        if info.filename in seen.values():
            raise _reject("duplicate_name", f"entry {info.filename!r} appears twice")
        key = unicodedata.normalize("NFC", info.filename).casefold()
        if key in seen:
            raise _reject(
                "name_collision",
                f"entries {seen[key]!r} and {info.filename!r} differ only in case or normalisation",
            )
        seen[key] = info.filename
    wanted = [i for i in files if not _ignored(i.filename)]
    tops = {i.filename.split("/", 1)[0] for i in wanted}
    top = ""
    if len(tops) == 1 and all("/" in i.filename for i in wanted):
        candidate = next(iter(tops))
        if candidate not in manifest["cases"]:
            top = candidate + "/"
    structures = set(manifest["structures"])
    cases = manifest["cases"]
    plan: list[tuple[zipfile.ZipInfo, Member]] = []
    layouts: set[str] = set()
    taken: set[tuple[str, str | None]] = set()
    for info in wanted:
        parts = _split(info.filename, top)
        image = _image_stem(parts[-1])
        if image is None:
            raise _reject(
                "unexpected_member", f"entry {info.filename!r} is not a .nii or .nii.gz file"
            )
        stem, suffix = image
        if len(parts) == 1:
            case_id, structure, layout = stem, None, "labelmap"
        elif len(parts) == 2 or (len(parts) == 3 and parts[1] == "segmentations"):
            case_id, structure, layout = parts[0], stem, "structures"
        else:
            raise _reject(
                "unexpected_member",
                f"entry {info.filename!r} is nested too deep; use CASE.nii.gz or "
                "CASE/STRUCTURE.nii.gz",
            )
        layouts.add(layout)
        if len(layouts) > 1:
            raise _reject(
                "mixed_layout", "use either CASE.nii.gz label maps or CASE/STRUCTURE.nii.gz masks"
            )
        if case_id not in cases:
            raise _reject(
                "unknown_case", f"entry {info.filename!r}: the phase has no case {case_id!r}"
            )
        if structure is not None and structure not in structures:
            raise _reject(
                "unknown_structure",
                f"entry {info.filename!r}: no structure {structure!r} (known: "
                f"{', '.join(sorted(structures))})",
            )
        if (case_id, structure) in taken:
            raise _reject(
                "duplicate_case",
                f"two entries for case {case_id!r}"
                + (f", structure {structure!r}" if structure else ""),
            )
        taken.add((case_id, structure))
        plan.append((info, Member(info.filename, case_id, structure, suffix)))
    missing = sorted(set(cases) - {c for c, _ in taken})
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise _reject("missing_cases", f"{len(missing)} case(s) have no prediction: {shown}")
    return plan


def _ignored(name: str) -> bool:
    """macOS resource forks and hidden files, which zip tools add (never extracted)."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith(".")


def expected_bytes(case: Mapping[str, Any]) -> int:
    """The most bytes an uncompressed NIfTI of ``case``'s grid can need (8-byte voxels)."""
    return _MAX_VOX_OFFSET + int(np.prod(case["shape"], dtype=np.int64)) * 8


def _read_member(fh: IO[bytes], info: zipfile.ZipInfo, start: int) -> bytes:
    """An entry's bytes, inflated here from its data and never beyond its declared size:
    the data must hold exactly that many bytes, with the directory's CRC."""
    name = info.filename
    inflater = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    out = bytearray()
    left = info.compress_size
    fh.seek(start)
    try:
        while left > 0:
            block = fh.read(min(_CHUNK, left))
            if not block:
                raise _reject("truncated", f"entry {name!r} ends before its compressed size")
            left -= len(block)
            if inflater is not None:
                block = inflater.decompress(block, info.file_size + 1 - len(out))
            out += block
            if len(out) > info.file_size:
                raise _reject(
                    "too_large",
                    f"entry {name!r} holds more than the {info.file_size} bytes it declares",
                )
    except zlib.error as exc:
        raise _reject("corrupt", f"entry {name!r} is damaged deflate data ({exc})") from None
    if inflater is not None and not inflater.eof:
        raise _reject("truncated", f"entry {name!r}: its deflate data ends early")
    if inflater is not None and inflater.unused_data:
        raise _reject("corrupt", f"entry {name!r} has data after its deflate stream")
    if len(out) < info.file_size:
        raise _reject(
            "truncated",
            f"entry {name!r} holds {len(out)} of the {info.file_size} bytes it declares",
        )
    if zlib.crc32(out) != info.CRC:
        raise _reject("corrupt", f"entry {name!r} fails its CRC check")
    return bytes(out)


def _read_capped(stream: IO[bytes], cap: int, name: str) -> bytes:
    """Read a zip member from :meth:`zipfile.ZipFile.open`, refusing more than ``cap`` bytes
    (for :mod:`~assay.service._model_archive`; predictions use :func:`_read_member`)."""
    out = bytearray()
    try:
        while True:
            block = stream.read(_CHUNK)
            if not block:
                return bytes(out)
            out += block
            if len(out) > cap:
                raise _reject(
                    "too_large", f"entry {name!r} holds more than the {cap} bytes its case can need"
                )
    except zipfile.BadZipFile as exc:
        raise _reject("corrupt", f"entry {name!r}: {exc}") from None
    except (zlib.error, EOFError) as exc:
        raise _reject("truncated", f"entry {name!r} ends early or is damaged ({exc})") from None


class _Inflater:
    """Incremental gunzip of a member's bytes, capped at ``cap`` output bytes."""

    def __init__(self, data: bytes, cap: int, name: str) -> None:
        if data[:2] != _GZIP_MAGIC:
            raise _reject("corrupt", f"entry {name!r} is named .nii.gz but is not gzip data")
        self.obj = zlib.decompressobj(wbits=31)
        self.data = data
        self.cap = cap
        self.name = name
        self.out = bytearray()

    def take(self, n: int) -> bytes:
        """The first ``n`` bytes of output (fewer only at the end of the stream), inflating
        no more than that (so a header is checked before a huge stream hits the cap)."""
        try:  # stop at the end of the stream: zlib then keeps returning the rest unconsumed
            while (
                len(self.out) < n and not self.obj.eof and (self.data or self.obj.unconsumed_tail)
            ):
                source = self.obj.unconsumed_tail or self.data[:_CHUNK]
                if not self.obj.unconsumed_tail:
                    self.data = self.data[_CHUNK:]
                self.out += self.obj.decompress(source, min(_CHUNK, n - len(self.out)))
                if len(self.out) > self.cap:
                    raise _reject(
                        "too_large",
                        f"entry {self.name!r} decompresses beyond the bytes its case can need",
                    )
        except zlib.error as exc:
            raise _reject("corrupt", f"entry {self.name!r} is damaged gzip data ({exc})") from None
        return bytes(self.out[:n])

    def finish(self) -> bytes:
        """The whole output; the stream must end exactly there."""
        self.take(self.cap + 1)
        if not self.obj.eof:
            raise _reject("truncated", f"entry {self.name!r}: the gzip stream ends early")
        if (self.obj.unused_data + self.data).strip(b"\x00"):
            raise _reject("corrupt", f"entry {self.name!r} has data after its gzip stream")
        return bytes(self.out)


def _header(raw: bytes, name: str) -> Any:
    import nibabel as nib

    if len(raw) < 348:
        raise _reject("truncated", f"entry {name!r} is shorter than a NIfTI header")
    sizeof = struct.unpack("<i", raw[:4])[0]
    endian = "<"
    if sizeof != 348:
        if struct.unpack(">i", raw[:4])[0] == 348:
            endian = ">"
        else:
            raise _reject(
                "bad_nifti", f"entry {name!r} is not a NIfTI-1 file (header size {sizeof})"
            )
    try:
        header = nib.Nifti1Header(raw[:348], endianness=endian, check=False)
    except Exception as exc:  # nibabel raises several kinds on junk headers
        raise _reject("bad_nifti", f"entry {name!r}: unreadable NIfTI header ({exc})") from None
    if header["magic"].tobytes().rstrip(b"\x00") != b"n+1":
        raise _reject("bad_nifti", f"entry {name!r} has no single-file NIfTI-1 magic 'n+1'")
    return header


def check_header(
    header: Any, case: Mapping[str, Any], name: str, total: int | None
) -> tuple[np.dtype[Any], int]:
    """Check a NIfTI-1 header against the case grid; returns (voxel dtype, vox_offset)."""
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7 or any(d < 0 for d in dim[1 : ndim + 1]):
        raise _reject("bad_nifti", f"entry {name!r} has invalid dimensions {dim}")
    shape = dim[1 : ndim + 1]
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if shape != list(case["shape"]):
        raise _reject(
            "bad_geometry",
            f"entry {name!r} has shape {tuple(shape)}, its reference grid is "
            f"{tuple(case['shape'])}",
        )
    code = int(header["datatype"])
    if code not in _DATATYPES:
        raise _reject(
            "bad_datatype", f"entry {name!r} has NIfTI datatype {code}; use uint8 or int16 labels"
        )
    raw_offset = float(header["vox_offset"])
    if not (np.isfinite(raw_offset) and raw_offset.is_integer()) or not (
        352 <= raw_offset <= _MAX_VOX_OFFSET
    ):
        raise _reject(
            "bad_nifti",
            f"entry {name!r} has vox_offset {raw_offset:g}; a .nii's voxels start at a whole "
            f"byte from 352 to {_MAX_VOX_OFFSET}",
        )
    offset = int(raw_offset)
    try:  # what nibabel refuses (or fixes, e.g. qfac 0) when the scorer reads the file
        header.check_fix(logger=_QUIET, error_level=40)
    except Exception as exc:
        raise _reject("bad_nifti", f"entry {name!r}: invalid NIfTI header ({exc})") from None
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    unscaled = slope == 0.0 or np.isnan(slope)  # nibabel then ignores scl_inter
    if not (unscaled and (inter == 0.0 or np.isnan(inter))) and (slope, inter) != (1.0, 0.0):
        raise _reject(
            "bad_nifti", f"entry {name!r} scales its voxels (scl_slope {slope}, scl_inter {inter})"
        )
    both = int(header["sform_code"]) > 0 and int(header["qform_code"]) > 0
    try:  # nibabel raises on quaternions of norm > 1 (and NumPy warns on NaN ones)
        with np.errstate(all="ignore"):
            affine = np.asarray(header.get_best_affine(), dtype=float)
            qform = np.asarray(header.get_qform(), dtype=float) if both else None
    except Exception as exc:
        raise _reject("bad_nifti", f"entry {name!r} has an unusable qform ({exc})") from None
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise _reject("bad_nifti", f"entry {name!r} has an invalid affine")
    if qform is not None and not np.allclose(qform, header.get_sform(), rtol=0, atol=1e-3):
        raise _reject("bad_nifti", f"entry {name!r}: its sform and qform disagree")
    reference = np.asarray(case["affine"], dtype=float)
    if not np.allclose(affine, reference, rtol=0.0, atol=1e-4):
        raise _reject(
            "bad_geometry", f"entry {name!r}: its affine differs from the reference grid's"
        )
    dtype = np.dtype(_DATATYPES[code]).newbyteorder(header.endianness)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if total is not None and total != need:
        raise _reject(
            "truncated" if total < need else "too_large",
            f"entry {name!r} holds {total} bytes; its header says {need}",
        )
    return dtype, offset


def _check_extensions(head: bytes, offset: int, endian: str, name: str) -> None:
    """The header extensions (flagged by byte 348) must tile the bytes up to ``vox_offset``
    as nibabel walks them: each ``esize`` a positive multiple of 16 that fits."""
    if len(head) < 352 or head[348] == 0:
        return
    pos = 352
    while offset - pos >= 16:
        if pos + 8 > len(head):
            raise _reject("truncated", f"entry {name!r} ends inside its header extensions")
        esize = struct.unpack_from(endian + "i", head, pos)[0]
        if esize < 16 or esize % 16 or pos + esize > offset:
            raise _reject(
                "bad_nifti", f"entry {name!r} has a malformed header extension (esize {esize})"
            )
        pos += esize


def _check_values(data: np.ndarray, allowed: set[int], name: str) -> None:
    values = np.unique(data)
    if data.dtype.kind == "f" and (
        not np.all(np.isfinite(values)) or not np.all(values == np.round(values))
    ):
        raise _reject("bad_labels", f"entry {name!r} has values that are not whole numbers")
    bad = sorted(int(v) for v in values if int(v) not in allowed)
    if bad:
        raise _reject(
            "bad_labels",
            f"entry {name!r} has value(s) {', '.join(map(str, bad[:5]))}; allowed: "
            f"{', '.join(map(str, sorted(allowed)))}",
        )


@contextmanager
def checked_zip(path: Path, max_members: int) -> Iterator[tuple[zipfile.ZipFile, list[int]]]:
    """Open an upload with the archive- and entry-level checks done (steps 1-2 of the module
    docstring, up to the names): yields the zip and where each entry's data starts, for
    :func:`read_entry`. Shared by prediction and model archives."""
    try:
        zf = zipfile.ZipFile(path)
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
        struct.error,
    ) as exc:
        raise _reject("not_a_zip", f"the upload is not a readable zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise _reject(
                "too_many_members", f"{len(infos)} entries; this phase needs at most {max_members}"
            )
        for info in infos:
            _check_name(info.orig_filename)  # zipfile cuts .filename at a NUL
            _check_kind(info)
        directory_start = int(getattr(zf, "start_dir", os.path.getsize(path)))
        assert zf.fp is not None
        _check_end(zf.fp, os.path.getsize(path), zf.comment)
        yield zf, _locate(zf.fp, infos, directory_start)


def read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, start: int) -> bytes:
    """An entry's bytes, inflated by the validator itself to exactly its declared size."""
    assert zf.fp is not None
    return _read_member(zf.fp, info, start)


def _members(
    path: Path, manifest: Mapping[str, Any], *, max_members: int, allow_missing: bool
) -> Iterator[tuple[Member, bytes]]:
    with checked_zip(path, max_members) as (zf, starts):
        infos = zf.infolist()
        plan = plan_members(infos, manifest, allow_missing=allow_missing)
        for info, member in plan:
            cap = expected_bytes(manifest["cases"][member.case_id])
            if member.suffix == ".nii.gz":
                cap = cap + cap // 100 + 4096  # deflate's worst case on incompressible data
            if info.file_size > cap:
                raise _reject(
                    "too_large",
                    f"entry {info.filename!r} declares {info.file_size} bytes, more than its "
                    "case can need",
                )
        index = {id(info): i for i, info in enumerate(infos)}
        for info, member in plan:
            yield member, read_entry(zf, info, starts[index[id(info)]])


def _check_member(member: Member, data: bytes, manifest: Mapping[str, Any]) -> None:
    case = manifest["cases"][member.case_id]
    cap = expected_bytes(case)
    if member.suffix == ".nii.gz":
        inflater = _Inflater(data, cap, member.name)
        header = _header(inflater.take(352), member.name)
        dtype, offset = check_header(header, case, member.name, None)
        _check_extensions(inflater.take(offset), offset, header.endianness, member.name)
        raw = inflater.finish()
        check_header(header, case, member.name, len(raw))
    else:
        header = _header(data[:352], member.name)
        dtype, offset = check_header(header, case, member.name, len(data))
        _check_extensions(data, offset, header.endianness, member.name)
        raw = data
    voxels = np.frombuffer(raw, dtype=dtype, offset=offset)
    labels = {int(v) for v in manifest["labels"]}
    allowed = {0} | labels if member.structure is None else {0, 1}
    _check_values(voxels, allowed, member.name)


def validate_archive(
    path: str | Path,
    manifest: Mapping[str, Any],
    *,
    allow_missing: bool = False,
    max_members: int | None = None,
) -> list[Member]:
    """Validate the zip at ``path`` against a phase manifest (:func:`phase_manifest`).

    Returns the accepted members. Raises :class:`RejectedUpload` with the first problem.
    """
    return [m for m, _ in _validated(path, manifest, allow_missing, max_members)]


def _validated(
    path: str | Path, manifest: Mapping[str, Any], allow_missing: bool, max_members: int | None
) -> Iterator[tuple[Member, bytes]]:
    if max_members is None:
        n_structures = max(1, len(manifest["structures"]))
        max_members = len(manifest["cases"]) * (n_structures + 1) + 16
    for member, data in _members(
        Path(path), manifest, max_members=max_members, allow_missing=allow_missing
    ):
        _check_member(member, data, manifest)
        yield member, data


def extract_archive(
    path: str | Path,
    manifest: Mapping[str, Any],
    dest: str | Path,
    *,
    allow_missing: bool = False,
) -> tuple[str, list[Member]]:
    """Validate the zip and write its members under ``dest`` with names assay builds
    (``CASE.nii.gz`` or ``CASE/STRUCTURE.nii.gz``); returns (layout, members).

    Nothing is written for a rejected archive: members go to a hidden staging folder next
    to ``dest`` and move into place only once every one has passed (folders this call made
    are removed again). No name from the archive is used as a path: files are named from
    the manifest's case ids and structures.
    """
    dest = Path(dest)
    made = [p for p in (dest, *dest.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-incoming-", dir=dest.parent))
    accepted: list[tuple[Member, Path]] = []
    layout = "labelmap"
    try:
        for member, data in _validated(path, manifest, allow_missing, None):
            if member.structure is None:
                relative = Path(f"{member.case_id}{member.suffix}")
            else:
                layout = "structures"
                relative = Path(member.case_id, f"{member.structure}{member.suffix}")
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.resolve().is_relative_to(staging.resolve()):
                raise _reject("unsafe_path", f"entry {member.name!r} would leave the folder")
            target.write_bytes(data)
            accepted.append((member, relative))
        if dest.exists():
            for _, relative in accepted:
                (dest / relative).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / relative, dest / relative)
        else:
            os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # deepest first; only folders this call made, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return layout, [m for m, _ in accepted]
