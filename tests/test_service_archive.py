"""The upload validator against a generated corpus of hostile archives.

No binary is committed: every archive is built here with :mod:`zipfile`, :mod:`struct`,
:mod:`zlib`/:mod:`gzip` and nibabel, for a three-case synthetic phase (``case0000`` ...
``case0002`` on the 40×40×24 grid of :mod:`assay.service._synthetic`). Each corpus item
must be refused with its exact code (:data:`assay.service.REJECTIONS`) by
:func:`validate_archive` and by :func:`extract_archive`, which must then leave the folder
as it was. Valid archives in both layouts (also inside one top-level folder) are accepted,
and what is extracted reads back, through assay's own reader, as what was zipped. The
bombs run again in a child process under a 2 GiB ``RLIMIT_AS``, and fuzzing (random bytes,
truncations, byte flips, header fields) must only ever give ``RejectedUpload`` or success.
"""

from __future__ import annotations

import functools
import gzip
import io
import itertools
import json
import os
import random
import stat
import struct
import subprocess
import sys
import textwrap
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from service_helpers import zip_bytes

from assay.io import read_image
from assay.service import (
    REJECTIONS,
    RejectedUpload,
    build_manifest,
    extract_archive,
    phase_manifest,
    validate_archive,
    zip_predictions,
)
from assay.service._archive import expected_bytes
from assay.service._synthetic import (
    SHAPE,
    SYNTHETIC_STRUCTURES,
    affine,
    case_masks,
    predicted_label_map,
    write_predictions,
    write_reference,
)

CASES = ("case0000", "case0001", "case0002")
MB = 1 << 20


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = write_reference(tmp_path_factory.mktemp("reference") / "synth", len(CASES))
    return phase_manifest(build_manifest("synth", root), None)


# -- images ------------------------------------------------------------------------------


@functools.cache
def label_map(i: int = 0) -> np.ndarray:
    """Case ``i``'s reference as a label map (values 0-3)."""
    return predicted_label_map(i, 0.0)


@functools.cache
def mask(i: int, structure: str) -> np.ndarray:
    return case_masks(i)[structure].astype(np.uint8)


def nii(
    array: np.ndarray | None = None,
    *,
    gz: bool = True,
    aff: np.ndarray | None = None,
    endian: str = "<",
    tail: bytes = b"",
    **fields: Any,
) -> bytes:
    """A single-file NIfTI-1 of ``array`` (default: case 0's label map) with qform and sform
    ``aff``; header ``fields`` are then set raw (no nibabel check), ``tail`` appended."""
    array = label_map(0) if array is None else array
    aff = affine() if aff is None else aff
    header = nib.Nifti1Header(endianness=endian)
    header.set_data_dtype(array.dtype)
    image = nib.Nifti1Image(array, aff, header)
    image.header.set_qform(aff, code=1)
    image.header.set_sform(aff, code=1)
    raw = image.to_bytes()
    if fields:
        header = nib.Nifti1Header(raw[:348], endianness=endian, check=False)
        for key, value in fields.items():
            header[key] = value
        raw = header.binaryblock + raw[348:]
    raw += tail
    return gzip.compress(raw, mtime=0) if gz else raw


def with_extension(extension: bytes, *, esize: int | None = None, gz: bool = True) -> bytes:
    """Case 0's label map with one header extension (code 6, a comment) before the voxels."""
    raw = nii(gz=False)
    size = len(extension) + 8
    block = struct.pack("<2i", size if esize is None else esize, 6) + extension
    header = nib.Nifti1Header(raw[:348], check=False)
    header["vox_offset"] = 352 + len(block)
    out = header.binaryblock + b"\x01\x00\x00\x00" + block + raw[352:]
    return gzip.compress(out, mtime=0) if gz else out


def patched(data: bytes, offset: int, fmt: str, *values: Any) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def zeros_deflate(megabytes: int) -> bytes:
    """A raw deflate stream of ``megabytes`` MiB of zeros, about 1 KB per MiB: one
    self-contained block (ended by a full flush) repeated, then a final empty block."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(MB)) + comp.flush(zlib.Z_FULL_FLUSH)
    return block * megabytes + comp.flush()


def gzip_bomb(megabytes: int) -> bytes:
    """A .nii.gz: a valid header for the case grid, then ``megabytes`` MiB of zeros."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(nii(gz=False)[:352]) + comp.flush(zlib.Z_FULL_FLUSH)
    body = head + zeros_deflate(megabytes)
    size = (352 + megabytes * MB) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<2L", 0, size)


# -- archives ----------------------------------------------------------------------------


def labelmaps(*, top: str = "", gz: bool = True) -> dict[str, bytes]:
    """A valid label-map submission (``CASE.nii.gz``), optionally under folder ``top``."""
    suffix = ".nii.gz" if gz else ".nii"
    return {f"{top}{c}{suffix}": nii(label_map(i), gz=gz) for i, c in enumerate(CASES)}


def masks(*, top: str = "", sub: str = "") -> dict[str, bytes]:
    """A valid per-structure submission (``CASE/STRUCTURE.nii.gz``)."""
    return {
        f"{top}{c}/{sub}{s}.nii.gz": nii(mask(i, s))
        for i, c in enumerate(CASES)
        for s in SYNTHETIC_STRUCTURES
    }


def zipped(
    members: Mapping[str, bytes] | Iterable[tuple[str | zipfile.ZipInfo, bytes]],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """A zip of ``members`` (duplicates allowed: zipfile's warning is silenced)."""
    items = members.items() if isinstance(members, Mapping) else members
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
            for name, data in items:
                zf.writestr(name, data)
    return buffer.getvalue()


def replacing(name: str, data: bytes, *, drop: str = "case0000.nii.gz") -> bytes:
    """The valid label-map zip with ``drop`` replaced by ``name`` (first in the archive)."""
    members = {name: data} | {k: v for k, v in labelmaps().items() if k != drop}
    return zipped(members)


def case0(data: bytes, suffix: str = ".nii.gz") -> bytes:
    """The valid label-map zip with case 0's file replaced by ``data``."""
    return replacing(f"case0000{suffix}", data)


def entry(item: zipfile.ZipInfo | str, *, system: int = 3, mode: int = 0) -> zipfile.ZipInfo:
    info = item if isinstance(item, zipfile.ZipInfo) else zipfile.ZipInfo(item)
    info.create_system = system
    info.external_attr = mode << 16
    return info


def link(name: str, kind: int, *, system: int = 3) -> bytes:
    """The valid zip with an entry ``name`` (in place of a file of that name) whose Unix
    mode is of type ``kind``, pointing at /etc/passwd."""
    info = entry(name, system=system, mode=kind | 0o777)
    return zipped([(info, b"/etc/passwd"), *((k, v) for k, v in labelmaps().items() if k != name)])


#: Offsets of a field in the central directory header and the local header, and its format.
_FIELDS = {
    "flags": (8, 6, "<H"),
    "method": (10, 8, "<H"),
    "crc": (16, 14, "<L"),
    "compressed": (20, 18, "<L"),
    "size": (24, 22, "<L"),
}


def entries(data: bytes) -> list[tuple[int, int]]:
    """(central header offset, local header offset) of each entry of a zip."""
    end = data.rindex(b"PK\x05\x06")
    count, _, start = struct.unpack_from("<HLL", data, end + 10)
    out, pos = [], start
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, pos + 28)
        out.append((pos, struct.unpack_from("<L", data, pos + 42)[0]))
        pos += 46 + name_len + extra_len + comment_len
    return out


def field(data: bytes, name: str, index: int = 0) -> int:
    central, _ = entries(data)[index]
    offset, _, fmt = _FIELDS[name]
    return int(struct.unpack_from(fmt, data, central + offset)[0])


def patch(data: bytes, index: int = 0, *, where: str = "both", **values: int) -> bytes:
    """Set fields (``flags``, ``method``, ``crc``, ``compressed``, ``size``) of entry
    ``index`` in its central (``where="central"``), local or both headers."""
    central, local = entries(data)[index]
    for name, value in values.items():
        in_central, in_local, fmt = _FIELDS[name]
        if where in ("both", "central"):
            data = patched(data, central + in_central, fmt, value)
        if where in ("both", "local"):
            data = patched(data, local + in_local, fmt, value)
    return data


def adjust(name: str, delta: int, index: int = 0) -> Callable[[bytes], bytes]:
    return lambda data: patch(data, index, **{name: field(data, name, index) + delta})


def local_record(name: bytes, method: int, crc: int, compressed: int, size: int) -> bytes:
    fields = (b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, compressed, size, len(name), 0)
    return struct.pack("<4s5H3L2H", *fields) + name


def central_record(
    name: bytes, method: int, crc: int, compressed: int, size: int, offset: int
) -> bytes:
    fields = (b"PK\x01\x02", 20, 3, 20, 0, 0, method, 0, 0x21, crc, compressed, size)
    tail = (len(name), 0, 0, 0, 0, (stat.S_IFREG | 0o644) << 16, offset)
    return struct.pack("<4s4B4HL2L5H2L", *fields, *tail) + name


def end_record(count: int, size: int, offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, offset, 0)


def hand_zip(members: list[tuple[str, int, int, int, bytes]]) -> bytes:
    """A zip of (name, method, crc, declared size, data) built byte by byte."""
    body, directory = b"", b""
    for name, method, crc, size, data in members:
        raw = name.encode()
        directory += central_record(raw, method, crc, len(data), size, len(body))
        body += local_record(raw, method, crc, len(data), size) + data
    return body + directory + end_record(len(members), len(directory), len(body))


def quoted_overlap(n: int = 3) -> tuple[bytes, list[bytes]]:
    """Fifield's quoted-overlap zip bomb, small: entry i's deflate data is a stored block
    quoting entry i+1's local header followed by entry i+1's own data, so every entry
    shares the last one's deflate stream. Returns the zip and each entry's content."""
    payload = nii(label_map(n - 1), gz=False)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    data, plain = comp.compress(payload) + comp.flush(), payload
    chain = []
    for i in reversed(range(n)):
        name = f"case{i:04d}.nii".encode()
        header = local_record(name, 8, zlib.crc32(plain), len(data), len(plain))
        chain.append((name, header, data, plain))
        quote = struct.pack("<BHH", 0, len(header), len(header) ^ 0xFFFF)
        data, plain = quote + header + data, header + plain
    chain.reverse()
    body = chain[0][1] + chain[0][2]
    directory, offset = b"", 0
    for name, header, data, plain in chain:
        directory += central_record(name, 8, zlib.crc32(plain), len(data), len(plain), offset)
        offset += len(header) + 5
    zip_data = body + directory + end_record(n, len(directory), len(body))
    return zip_data, [plain for *_, plain in chain]


def shared_header() -> bytes:
    """Two directory entries for one local entry: the zip form of a hard link."""
    data = zipped(labelmaps())
    (_, local0), (central1, _) = entries(data)[:2]
    return patched(data, central1 + 42, "<L", local0)


def nul_name() -> bytes:
    """An entry named ``case0000.nii.gz<NUL>x.txt`` (zipfile cuts names at a NUL, so the
    name is patched into the bytes)."""
    data = replacing("case0000.nii.gz#x.txt", nii())
    return data.replace(b"case0000.nii.gz#x.txt", b"case0000.nii.gz\x00x.txt")


def local_name_differs() -> bytes:
    data = zipped(labelmaps())
    _, local = entries(data)[0]
    return patched(data, local + 30, "8s", b"case0009")


def understated_bomb() -> bytes:
    """case0000.nii: 4 GiB of zeros (4 MB of deflate) declaring the case's 38,752 bytes."""
    stream = zeros_deflate(4096)
    need = 352 + int(np.prod(SHAPE))
    return hand_zip(
        [("case0000.nii", 8, zlib.crc32(bytes(need)), need, stream)]
        + [(k, 0, zlib.crc32(v), len(v), v) for k, v in labelmaps().items() if "0000" not in k]
    )


def honest_bomb() -> bytes:
    """case0000.nii: 200 MiB of zeros that says so in its declared size."""
    crc = 0
    for _ in range(200):
        crc = zlib.crc32(bytes(MB), crc)
    others = [(k, 0, zlib.crc32(v), len(v), v) for k, v in labelmaps().items() if "0000" not in k]
    return hand_zip([("case0000.nii", 8, crc, 200 * MB, zeros_deflate(200)), *others])


def mixed(*names: str) -> bytes:
    out = {}
    for name in names:
        stem = name.split("/")[0].removesuffix(".nii.gz")
        i = CASES.index(stem)
        out[name] = nii(mask(i, "liver") if "/" in name else label_map(i))
    return zipped(out)


def structure_case0(data: bytes) -> bytes:
    members = masks()
    members["case0000/liver.nii.gz"] = data
    return zipped(members)


def _label_array(values: Any, dtype: Any) -> np.ndarray:
    out = label_map(0).astype(dtype)
    out[0, 0, 0] = values
    return out


def _aff(shift: tuple[float, float, float] = (0.0, 0.0, 0.0), flip: bool = False) -> np.ndarray:
    out = affine()
    out[:3, 3] += shift
    if flip:
        out[0, :] *= -1
    return out


def _corrupt_deflate() -> bytes:
    data = bytearray(nii())
    data[40:60] = b"\xff" * 20
    return bytes(data)


def _bad_gzip_crc() -> bytes:
    data = bytearray(nii())
    data[-8] ^= 0xFF
    return bytes(data)


def _rgb() -> bytes:
    return nii(datatype=128, bitpix=24)


def _nifti2() -> bytes:
    raw = bytearray(nii(gz=False))
    raw[:4] = struct.pack("<i", 540)
    return gzip.compress(bytes(raw), mtime=0)


# -- the corpus --------------------------------------------------------------------------

_VALID_NII = 352 + int(np.prod(SHAPE))

#: (id, archive builder, code, validate_archive keyword arguments)
CORPUS: list[tuple[str, Callable[[], bytes], str, dict[str, Any]]] = [
    # paths
    ("zip_slip", lambda: replacing("../case0000.nii.gz", nii()), "unsafe_path", {}),
    ("zip_slip_deep", lambda: replacing("a/../../case0000.nii.gz", nii()), "unsafe_path", {}),
    ("absolute_path", lambda: replacing("/etc/case0000.nii.gz", nii()), "unsafe_path", {}),
    ("drive_letter", lambda: replacing("C:/tmp/case0000.nii.gz", nii()), "unsafe_path", {}),
    ("backslash_slip", lambda: replacing("..\\case0000.nii.gz", nii()), "unsafe_path", {}),
    ("dot_component", lambda: replacing("./case0000.nii.gz", nii()), "unsafe_path", {}),
    ("nul_byte", nul_name, "unsafe_path", {}),
    ("long_name", lambda: replacing("a" * 300 + ".nii.gz", nii()), "unsafe_path", {}),
    ("long_folder", lambda: replacing("x" * 256 + "/case0000.nii.gz", nii()), "unsafe_path", {}),
    ("long_path", lambda: replacing("a/" * 130 + "case0000.nii.gz", nii()), "unsafe_path", {}),
    ("symlink", lambda: link("case0000.nii.gz", stat.S_IFLNK), "link_entry", {}),
    ("symlink_macos", lambda: link("x.nii.gz", stat.S_IFLNK, system=19), "link_entry", {}),
    ("symlink_dos_system", lambda: link("x.nii.gz", stat.S_IFLNK, system=0), "link_entry", {}),
    ("symlink_folder", lambda: link("case0000/", stat.S_IFLNK), "link_entry", {}),
    ("char_device", lambda: link("zero", stat.S_IFCHR), "link_entry", {}),
    ("block_device", lambda: link("sda", stat.S_IFBLK), "link_entry", {}),
    ("fifo", lambda: link("pipe", stat.S_IFIFO), "link_entry", {}),
    ("socket", lambda: link("sock", stat.S_IFSOCK), "link_entry", {}),
    ("hardlink_shared_entry", shared_header, "overlapping_entries", {}),
    (
        "duplicate_name",
        lambda: zipped([("case0000.nii.gz", nii()), *labelmaps().items()]),
        "duplicate_name",
        {},
    ),
    (
        "case_collision",
        lambda: zipped({"CASE0000.nii.gz": nii(), **labelmaps()}),
        "name_collision",
        {},
    ),
    (
        "case_collision_structure",
        lambda: zipped({**masks(), "case0000/LIVER.nii.gz": nii(mask(0, "liver"))}),
        "name_collision",
        {},
    ),
    (
        "suffix_case_collision",
        lambda: zipped({"case0000.NII.GZ": nii(), **labelmaps()}),
        "name_collision",
        {},
    ),
    (
        "nfc_nfd_collision",
        lambda: zipped(
            {
                unicodedata.normalize("NFC", "café.nii.gz"): nii(),
                unicodedata.normalize("NFD", "café.nii.gz"): nii(),
                **labelmaps(),
            }
        ),
        "name_collision",
        {},
    ),
    (
        "nii_and_nii_gz",
        lambda: zipped({"case0000.nii": nii(gz=False), **labelmaps()}),
        "duplicate_case",
        {},
    ),
    # structure
    ("nested_zip", lambda: zipped({"inner.zip": zipped(labelmaps())}), "nested_archive", {}),
    ("nested_tar_gz", lambda: zipped({**labelmaps(), "x.tar.gz": b"x"}), "nested_archive", {}),
    ("nested_7z", lambda: zipped({**labelmaps(), "case0000.7z": b"7z"}), "nested_archive", {}),
    (
        "too_many_members",
        lambda: zipped({**labelmaps(), "case0000/liver.nii.gz": b""}),
        "too_many_members",
        {"max_members": 3},
    ),
    (
        "too_many_members_default_cap",  # 3 cases x (3 structures + 1) + 16 = 28
        lambda: zipped({f"junk/{i}.txt": b"" for i in range(29)}),
        "too_many_members",
        {},
    ),
    ("unknown_case", lambda: zipped({**labelmaps(), "case9999.nii.gz": nii()}), "unknown_case", {}),
    (
        "unknown_structure",
        lambda: zipped({**masks(), "case0000/heart.nii.gz": nii(mask(0, "liver"))}),
        "unknown_structure",
        {},
    ),
    (
        "missing_case",
        lambda: zipped({k: v for k, v in labelmaps().items() if "0002" not in k}),
        "missing_cases",
        {},
    ),
    ("empty_archive", lambda: zipped({}), "missing_cases", {}),
    (
        "mixed_layout",
        lambda: mixed("case0000.nii.gz", "case0001/liver.nii.gz", "case0002.nii.gz"),
        "mixed_layout",
        {},
    ),
    ("text_member", lambda: zipped({**labelmaps(), "notes.txt": b"hi"}), "unexpected_member", {}),
    (
        "too_deep",
        lambda: zipped({**masks(top="p/"), "p/case0000/x/liver.nii.gz": nii()}),
        "unexpected_member",
        {},
    ),
    ("encrypted", lambda: patch(zipped(labelmaps()), flags=0x1), "encrypted", {}),
    ("strong_encryption", lambda: patch(zipped(labelmaps()), flags=0x41), "encrypted", {}),
    ("directory_encryption", lambda: patch(zipped(labelmaps()), flags=0x2000), "encrypted", {}),
    (
        "encrypted_in_local_header_only",
        lambda: patch(zipped(labelmaps()), where="local", flags=0x1),
        "corrupt",
        {},
    ),
    (
        "bzip2",
        lambda: zipped(labelmaps(), compression=zipfile.ZIP_BZIP2),
        "unsupported_compression",
        {},
    ),
    (
        "lzma",
        lambda: zipped(labelmaps(), compression=zipfile.ZIP_LZMA),
        "unsupported_compression",
        {},
    ),
    ("aes_method_99", lambda: patch(zipped(labelmaps()), method=99), "unsupported_compression", {}),
    (
        "patched_data_flag",
        lambda: patch(zipped(labelmaps()), flags=0x20),
        "unsupported_compression",
        {},
    ),
    (
        "local_method_differs",
        lambda: patch(zipped(labelmaps()), where="local", method=0),
        "corrupt",
        {},
    ),
    ("local_name_differs", local_name_differs, "corrupt", {}),
    (
        "truncated_half",
        lambda: zipped(labelmaps())[: len(zipped(labelmaps())) // 2],
        "not_a_zip",
        {},
    ),
    ("truncated_last_byte", lambda: zipped(labelmaps())[:-1], "not_a_zip", {}),
    ("front_cut", lambda: zipped(labelmaps())[64:], "corrupt", {}),
    ("empty_file", lambda: b"", "not_a_zip", {}),
    ("text_file", lambda: b"case0000,1,2,3\n" * 10, "not_a_zip", {}),
    (
        "polyglot_prefix",
        lambda: b"#!/bin/sh\necho hi\nexit 0\n" + zipped(labelmaps()),
        "not_a_zip",
        {},
    ),
    (
        "polyglot_suffix",
        lambda: zipped(labelmaps()) + b"<script>alert(1)</script>",
        "not_a_zip",
        {},
    ),
    # sizes
    ("declared_size_larger", lambda: adjust("size", 1000)(zipped(labelmaps())), "truncated", {}),
    ("declared_size_smaller", lambda: adjust("size", -100)(zipped(labelmaps())), "too_large", {}),
    (
        "declared_size_smaller_crc_matched",
        lambda: patch(
            zipped(labelmaps()),
            size=len(nii()) - 100,
            crc=zlib.crc32(nii()[:-100]),
        ),
        "too_large",
        {},
    ),
    (
        "compressed_size_smaller",
        lambda: adjust("compressed", -100)(zipped(labelmaps())),
        "truncated",
        {},
    ),
    (
        "compressed_size_larger",
        lambda: adjust("compressed", 100)(zipped(labelmaps())),
        "overlapping_entries",
        {},
    ),
    (
        "last_entry_into_directory",
        lambda: adjust("compressed", 100, 2)(zipped(labelmaps())),
        "overlapping_entries",
        {},
    ),
    ("wrong_crc", lambda: adjust("crc", 1)(zipped(labelmaps())), "corrupt", {}),
    (
        "local_size_differs",
        lambda: patch(
            zipped(labelmaps()), where="local", size=field(zipped(labelmaps()), "size") + 1
        ),
        "corrupt",
        {},
    ),
    ("quoted_overlap_bomb", lambda: quoted_overlap()[0], "overlapping_entries", {}),
    ("deflate_bomb_declared", honest_bomb, "too_large", {}),
    ("deflate_bomb_understated", understated_bomb, "too_large", {}),
    ("stored_beyond_cap", lambda: case0(nii(gz=False, tail=bytes(MB)), ".nii"), "too_large", {}),
    (
        "nii_longer_than_header",
        lambda: case0(nii(gz=False, tail=bytes(1000)), ".nii"),
        "too_large",
        {},
    ),
    ("nii_gz_longer_than_header", lambda: case0(nii(tail=bytes(1000))), "too_large", {}),
    ("gzip_bomb", lambda: case0(gzip_bomb(300)), "too_large", {}),
    ("gzip_second_stream", lambda: case0(nii() + gzip.compress(b"more")), "corrupt", {}),
    ("gzip_trailing_junk", lambda: case0(nii() + b"junk"), "corrupt", {}),
    # NIfTI headers
    (
        "dims_30000_cubed",
        lambda: case0(
            nii(gz=False, dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])[:352] + bytes(1048), ".nii"
        ),
        "bad_geometry",
        {},
    ),
    (
        "dims_30000_cubed_gz",
        lambda: case0(
            gzip.compress(nii(gz=False, dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])[:1400])
        ),
        "bad_geometry",
        {},
    ),
    ("negative_dim", lambda: case0(nii(dim=[3, -40, 40, 24, 1, 1, 1, 1])), "bad_nifti", {}),
    ("dim0_above_7", lambda: case0(nii(dim=[8, 40, 40, 24, 1, 1, 1, 1])), "bad_nifti", {}),
    ("dim0_zero", lambda: case0(nii(dim=[0, 40, 40, 24, 1, 1, 1, 1])), "bad_nifti", {}),
    (
        "four_d_two_volumes",
        lambda: case0(nii(np.stack([label_map(0)] * 2, axis=-1))),
        "bad_geometry",
        {},
    ),
    ("two_d", lambda: case0(nii(dim=[2, 40, 40, 1, 1, 1, 1, 1])), "bad_geometry", {}),
    (
        "transposed_grid",
        lambda: case0(nii(np.ascontiguousarray(label_map(0).T))),
        "bad_geometry",
        {},
    ),
    ("float64", lambda: case0(nii(label_map(0).astype(np.float64))), "bad_datatype", {}),
    ("complex64", lambda: case0(nii(label_map(0).astype(np.complex64))), "bad_datatype", {}),
    ("complex128", lambda: case0(nii(datatype=1792, bitpix=128)), "bad_datatype", {}),
    ("float128", lambda: case0(nii(datatype=1536, bitpix=128)), "bad_datatype", {}),
    ("rgb24", lambda: case0(_rgb()), "bad_datatype", {}),
    ("rgba32", lambda: case0(nii(datatype=2304, bitpix=32)), "bad_datatype", {}),
    ("binary_1bit", lambda: case0(nii(datatype=1, bitpix=1)), "bad_datatype", {}),
    ("unknown_datatype", lambda: case0(nii(datatype=999)), "bad_datatype", {}),
    ("vox_offset_absurd", lambda: case0(nii(vox_offset=1e9)), "bad_nifti", {}),
    ("vox_offset_nan", lambda: case0(nii(vox_offset=np.nan)), "bad_nifti", {}),
    ("vox_offset_inf", lambda: case0(nii(vox_offset=np.inf)), "bad_nifti", {}),
    ("vox_offset_negative", lambda: case0(nii(vox_offset=-352)), "bad_nifti", {}),
    ("vox_offset_inside_header", lambda: case0(nii(vox_offset=348)), "bad_nifti", {}),
    ("vox_offset_fractional", lambda: case0(nii(vox_offset=352.5)), "bad_nifti", {}),
    ("vox_offset_beyond_file", lambda: case0(nii(vox_offset=60000)), "truncated", {}),
    ("huge_extension", lambda: case0(with_extension(bytes(MB))), "bad_nifti", {}),
    ("extension_esize_4", lambda: case0(with_extension(bytes(24), esize=4)), "bad_nifti", {}),
    ("extension_esize_odd", lambda: case0(with_extension(bytes(24), esize=20)), "bad_nifti", {}),
    (
        "extension_past_voxels",
        lambda: case0(with_extension(bytes(24), esize=4096)),
        "bad_nifti",
        {},
    ),
    ("scl_slope_2", lambda: case0(nii(scl_slope=2.0, scl_inter=0.0)), "bad_nifti", {}),
    ("scl_slope_inf", lambda: case0(nii(scl_slope=np.inf, scl_inter=0.0)), "bad_nifti", {}),
    ("scl_slope_negative", lambda: case0(nii(scl_slope=-1.0, scl_inter=0.0)), "bad_nifti", {}),
    ("scl_inter_5", lambda: case0(nii(scl_slope=1.0, scl_inter=5.0)), "bad_nifti", {}),
    ("scl_inter_nan", lambda: case0(nii(scl_slope=1.0, scl_inter=np.nan)), "bad_nifti", {}),
    ("nan_sform", lambda: case0(nii(srow_x=[np.nan, 0, 0, -30])), "bad_nifti", {}),
    ("nan_qform", lambda: case0(nii(sform_code=0, quatern_b=np.nan)), "bad_nifti", {}),
    ("quaternion_norm_above_1", lambda: case0(nii(sform_code=0, quatern_b=2.0)), "bad_nifti", {}),
    ("singular_sform", lambda: case0(nii(qform_code=0, srow_x=[0, 0, 0, -30])), "bad_nifti", {}),
    ("sform_disagrees_qform", lambda: case0(nii(srow_x=[1.5, 0, 0, -25])), "bad_nifti", {}),
    ("shifted_origin", lambda: case0(nii(aff=_aff((5.0, 0.0, 0.0)))), "bad_geometry", {}),
    ("flipped_axis", lambda: case0(nii(aff=_aff(flip=True))), "bad_geometry", {}),
    ("wrong_spacing", lambda: case0(nii(aff=np.diag([1.0, 1.0, 1.0, 1.0]))), "bad_geometry", {}),
    ("no_orientation", lambda: case0(nii(qform_code=0, sform_code=0)), "bad_geometry", {}),
    ("bad_magic", lambda: case0(nii(magic=b"xyz")), "bad_nifti", {}),
    ("pair_magic_ni1", lambda: case0(nii(magic=b"ni1")), "bad_nifti", {}),
    ("nifti2_header_size", lambda: case0(_nifti2()), "bad_nifti", {}),
    (
        "garbage_header",
        lambda: case0(gzip.compress(random.Random(7).randbytes(_VALID_NII))),
        "bad_nifti",
        {},
    ),
    ("zero_header", lambda: case0(gzip.compress(bytes(_VALID_NII))), "bad_nifti", {}),
    ("shorter_than_header", lambda: case0(nii(gz=False)[:100], ".nii"), "truncated", {}),
    ("voxels_cut_short", lambda: case0(nii(gz=False)[:-100], ".nii"), "truncated", {}),
    # voxel values
    ("label_7", lambda: case0(nii(_label_array(7, np.uint8))), "bad_labels", {}),
    ("label_negative", lambda: case0(nii(_label_array(-1, np.int16))), "bad_labels", {}),
    ("float_half", lambda: case0(nii(_label_array(0.5, np.float32))), "bad_labels", {}),
    ("float_nan", lambda: case0(nii(_label_array(np.nan, np.float32))), "bad_labels", {}),
    ("float_huge", lambda: case0(nii(_label_array(1e30, np.float32))), "bad_labels", {}),
    ("mask_value_2", lambda: structure_case0(nii(mask(0, "liver") * 2)), "bad_labels", {}),
    (
        "mask_float_half",
        lambda: structure_case0(nii(mask(0, "liver") * np.float32(0.5))),
        "bad_labels",
        {},
    ),
    (
        "labels_late_member",
        lambda: zipped({**labelmaps(), "case0002.nii.gz": nii(_label_array(9, np.uint8))}),
        "bad_labels",
        {},
    ),
    # gzip streams
    ("nii_gz_not_gzip", lambda: case0(nii(gz=False)), "corrupt", {}),
    ("gzip_truncated", lambda: case0(nii()[:-200]), "truncated", {}),
    ("gzip_truncated_in_header", lambda: case0(nii()[:20]), "truncated", {}),
    ("gzip_damaged", lambda: case0(_corrupt_deflate()), "corrupt", {}),
    ("gzip_bad_crc", lambda: case0(_bad_gzip_crc()), "corrupt", {}),
]

_IDS = [name for name, *_ in CORPUS]
assert len(set(_IDS)) == len(_IDS), "corpus ids must be unique"


@functools.cache
def built(name: str) -> bytes:
    """The archive of corpus item ``name`` (built once per run)."""
    return next(build for item, build, *_ in CORPUS if item == name)()


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def listing(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with the bytes of each file (None for folders)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def rejection(path: Path, manifest: Mapping[str, Any], **kwargs: Any) -> str | None:
    """The rejection code of the archive at ``path``, or None if accepted. Anything other
    than :class:`RejectedUpload` propagates (and fails the test)."""
    try:
        validate_archive(path, manifest, **kwargs)
    except RejectedUpload as exc:
        assert exc.code in REJECTIONS, exc.code
        assert exc.reason and "\n" not in exc.reason
        return exc.code
    return None


# -- every hostile archive is refused with its code ----------------------------------------


@pytest.mark.parametrize(("name", "code", "kwargs"), [(c[0], c[2], c[3]) for c in CORPUS], ids=_IDS)
def test_corpus_is_rejected_with_its_code(
    name: str, code: str, kwargs: dict[str, Any], manifest: dict[str, Any], tmp_path: Path
) -> None:
    path = write(tmp_path, "upload.zip", built(name))
    assert rejection(path, manifest, **kwargs) == code


_EXTRACTABLE = [(c[0], c[2]) for c in CORPUS if not c[3]]  # extract_archive: no max_members


@pytest.mark.parametrize(("name", "code"), _EXTRACTABLE, ids=[c[0] for c in _EXTRACTABLE])
def test_rejected_archive_extracts_nothing(
    name: str, code: str, manifest: dict[str, Any], tmp_path: Path
) -> None:
    write(tmp_path, "upload.zip", built(name))
    before = listing(tmp_path)
    with pytest.raises(RejectedUpload) as caught:
        extract_archive(tmp_path / "upload.zip", manifest, tmp_path / "out" / "predictions")
    assert caught.value.code == code
    assert listing(tmp_path) == before


def test_rejection_into_an_existing_folder_leaves_it_as_it_was(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    (dest / "case0000.nii.gz").write_bytes(b"old")
    write(tmp_path, "upload.zip", built("labels_late_member"))
    before = listing(tmp_path)
    with pytest.raises(RejectedUpload, match="bad_labels"):
        extract_archive(tmp_path / "upload.zip", manifest, dest)
    assert listing(tmp_path) == before


def test_every_upload_code_has_a_corpus_item() -> None:
    codes = {code for _, _, code, _ in CORPUS}
    assert set(REJECTIONS) - codes == {"attempts_exhausted"}  # a quota, not an archive


def test_quoted_overlap_is_a_real_bomb() -> None:
    """The corpus's overlap bomb is well formed: each entry's own deflate data decompresses
    to its declared content, and contains the next entry's local header (so the entries
    overlap and all share the last one's data)."""
    data, contents = quoted_overlap()
    ends = []
    for index, ((_, local), content) in enumerate(zip(entries(data), contents, strict=True)):
        compressed = field(data, "compressed", index)
        name_len = struct.unpack_from("<H", data, local + 26)[0]
        start = local + 30 + name_len
        assert zlib.decompress(data[start : start + compressed], -15) == content
        assert field(data, "crc", index) == zlib.crc32(content)
        ends.append((local, start + compressed))
    for (_, end), (next_local, _) in itertools.pairwise(ends):
        assert end > next_local
    assert len({end for _, end in ends}) == 1  # one shared deflate stream
    assert contents[0].count(b"PK\x03\x04") == 2
    assert contents[0].endswith(contents[-1])


def test_bomb_sizes_are_real() -> None:
    """The bombs expand as claimed (else their too_large would prove nothing)."""
    inflater = zlib.decompressobj(-15)
    assert len(inflater.decompress(zeros_deflate(64))) == 64 * MB and inflater.eof
    assert len(zeros_deflate(4096)) < 5 * MB
    bomb = gzip_bomb(300)
    assert len(bomb) < expected_bytes({"shape": SHAPE})  # passes the zip-level size cap
    head = zlib.decompressobj(31).decompress(bomb, 352)
    assert head == nii(gz=False)[:352]


# -- valid archives are accepted and extracted as they were zipped --------------------------


VALID: list[tuple[str, Callable[[], bytes], str]] = [
    ("labelmaps", lambda: zipped(labelmaps()), "labelmap"),
    ("labelmaps_nii", lambda: zipped(labelmaps(gz=False)), "labelmap"),
    ("labelmaps_stored", lambda: zipped(labelmaps(), compression=zipfile.ZIP_STORED), "labelmap"),
    ("labelmaps_in_folder", lambda: zipped(labelmaps(top="predictions/")), "labelmap"),
    ("labelmaps_helper_zip", lambda: zip_bytes(labelmaps()), "labelmap"),
    ("masks", lambda: zipped(masks()), "structures"),
    ("masks_in_folder", lambda: zipped(masks(top="my model/")), "structures"),
    ("masks_segmentations_folder", lambda: zipped(masks(sub="segmentations/")), "structures"),
    (
        "with_folder_entries_and_macos_junk",
        lambda: zipped(
            [
                (entry("predictions/", mode=stat.S_IFDIR | 0o755), b""),
                ("__MACOSX/predictions/._case0000.nii.gz", b"\x00\x05\x16\x07"),
                ("predictions/.DS_Store", b"junk"),
                *labelmaps(top="predictions/").items(),
            ]
        ),
        "labelmap",
    ),
    (
        "regular_file_modes",
        lambda: zipped([(entry(k, mode=stat.S_IFREG | 0o644), v) for k, v in labelmaps().items()]),
        "labelmap",
    ),
]


def _streamed() -> bytes:
    """Written to a non-seekable stream: data descriptors, zero sizes in local headers."""

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buffer = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.buffer += bytes(b)
            return len(b)

    out = Unseekable()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in labelmaps().items():
            zf.writestr(name, data)
    return bytes(out.buffer)


#: Files nibabel and assay's reader accept, which the validator must accept too.
VALID += [
    ("data_descriptors", _streamed, "labelmap"),
    ("big_endian", lambda: case0(nii(endian=">")), "labelmap"),
    ("zero_scl_slope", lambda: case0(nii(scl_slope=0.0, scl_inter=0.0)), "labelmap"),
    ("unit_scl_slope", lambda: case0(nii(scl_slope=1.0, scl_inter=0.0)), "labelmap"),
    ("qfac_zero", lambda: case0(nii(pixdim=[0.0, 1.5, 1.5, 2.5, 1, 1, 1, 1])), "labelmap"),
    ("sform_only", lambda: case0(nii(qform_code=0)), "labelmap"),
    ("qform_only", lambda: case0(nii(sform_code=0)), "labelmap"),
    ("four_d_one_volume", lambda: case0(nii(label_map(0)[..., None])), "labelmap"),
    ("int16_labels", lambda: case0(nii(label_map(0).astype(np.int16))), "labelmap"),
    ("float32_whole_labels", lambda: case0(nii(label_map(0).astype(np.float32))), "labelmap"),
    ("extension", lambda: case0(with_extension(b"made by a test".ljust(24, b"\0"))), "labelmap"),
    ("gzip_zero_padding", lambda: case0(nii() + bytes(16)), "labelmap"),
    ("vox_offset_large_aligned", lambda: case0(with_extension(bytes(4072))), "labelmap"),
]


@pytest.mark.parametrize(("build", "layout"), [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_archive_is_accepted_and_extracted_under_dest_only(
    build: Callable[[], bytes], layout: str, manifest: dict[str, Any], tmp_path: Path
) -> None:
    data = build()
    path = write(tmp_path, "upload.zip", data)
    members = validate_archive(path, manifest)
    structures = (None,) if layout == "labelmap" else SYNTHETIC_STRUCTURES
    assert sorted((m.case_id, m.structure) for m in members) == sorted(
        (c, s) for c in CASES for s in structures
    )
    before = listing(tmp_path)
    got_layout, extracted = extract_archive(path, manifest, tmp_path / "out" / "predictions")
    assert got_layout == layout and extracted == members
    after = listing(tmp_path)
    added = sorted(set(after) - set(before))
    assert {k: after[k] for k in before} == before  # nothing else changed
    targets = {
        m: f"out/predictions/{m.case_id}{m.suffix}"
        if m.structure is None
        else f"out/predictions/{m.case_id}/{m.structure}{m.suffix}"
        for m in members
    }
    assert [k for k in added if after[k] is not None] == sorted(targets.values())
    assert all(k == "out" or k.startswith("out/predictions") for k in added)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for m, target in targets.items():
            written = tmp_path / target
            assert written.read_bytes() == zf.read(m.name)
            image = read_image(written)
            i = CASES.index(m.case_id)
            want = label_map(i) if m.structure is None else mask(i, m.structure)
            np.testing.assert_array_equal(image.array, want)
            np.testing.assert_allclose(image.affine, affine(), atol=1e-4)


def test_client_zip_of_written_predictions_is_accepted(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    folder = write_predictions(tmp_path / "predictions", list(CASES), 1.0)
    path = write(tmp_path, "upload.zip", zip_predictions(folder))
    assert [m.case_id for m in validate_archive(path, manifest)] == list(CASES)


def test_missing_cases_are_accepted_when_the_phase_allows(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    path = write(tmp_path, "upload.zip", built("missing_case"))
    assert rejection(path, manifest) == "missing_cases"
    members = validate_archive(path, manifest, allow_missing=True)
    assert [m.case_id for m in members] == ["case0000", "case0001"]
    layout, extracted = extract_archive(path, manifest, tmp_path / "out", allow_missing=True)
    assert (layout, extracted) == ("labelmap", members)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "case0000.nii.gz",
        "case0001.nii.gz",
    ]


def test_extract_names_files_from_the_manifest_not_the_archive(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    """A folder name in the archive never becomes a path: only dest/CASE.nii.gz appear."""
    path = write(tmp_path, "upload.zip", zipped(labelmaps(top="evil name; rm -rf ~/")))
    extract_archive(path, manifest, tmp_path / "dest")
    assert sorted(listing(tmp_path / "dest")) == [f"{c}.nii.gz" for c in CASES]


# -- bounded memory and time: the bombs under RLIMIT_AS ---------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    from assay.service import RejectedUpload, validate_archive
    manifest = json.loads(open(sys.argv[1]).read())
    out = {}
    try:
        bytearray(3 << 30)
        out["limited"] = False
    except MemoryError:
        out["limited"] = True
    for path in sys.argv[2:]:
        start = time.perf_counter()
        try:
            validate_archive(path, manifest)
            code = None
        except RejectedUpload as exc:
            code = exc.code
        out[path] = [code, time.perf_counter() - start]
    print(json.dumps(out))
    """
)

_BOUNDED = (
    "dims_30000_cubed",
    "dims_30000_cubed_gz",
    "deflate_bomb_understated",
    "deflate_bomb_declared",
    "gzip_bomb",
    "quoted_overlap_bomb",
)


def test_bombs_are_refused_fast_under_a_2_gib_address_space(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    paths = {name: write(tmp_path, f"{name}.zip", built(name)) for name in _BOUNDED}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "child.py").write_text(_CHILD)
    done = subprocess.run(
        [sys.executable, "child.py", "manifest.json", *(str(p) for p in paths.values())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["limited"] is True  # the limit is on: 3 GiB cannot be had
    codes = {name: code for name, _, code, _ in CORPUS if name in _BOUNDED}
    for name, path in paths.items():
        code, seconds = out[str(path)]
        assert code == codes[name], name
        assert seconds < 2.0, (name, seconds)


# -- fuzzing: RejectedUpload or success, never another exception ----------------------------


def _outcomes(
    blobs: Iterable[bytes], manifest: Mapping[str, Any], folder: Path, **kwargs: Any
) -> list[str | None]:
    path = folder / "fuzz.zip"
    out = []
    for blob in blobs:
        path.write_bytes(blob)
        out.append(rejection(path, manifest, **kwargs))
    return out


def test_fuzz_random_bytes_are_rejected(manifest: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(20240601)
    valid = zipped(labelmaps())
    blobs = []
    for i in range(120):
        junk = rng.randbytes(rng.randrange(0, 3000))
        if i % 4 == 1:
            junk = b"PK\x03\x04" + junk
        elif i % 4 == 2:
            junk = junk + b"PK\x05\x06" + rng.randbytes(18)
        elif i % 4 == 3:  # a real directory pointing into noise
            junk = junk + valid[valid.index(b"PK\x01\x02") - 300 :]
        blobs.append(junk)
    outcomes = _outcomes(blobs, manifest, tmp_path)
    assert None not in outcomes
    assert {"not_a_zip", "corrupt"} <= set(outcomes)


def test_fuzz_truncations_are_rejected(manifest: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(7)
    for valid in (zipped(labelmaps()), zipped(masks(), compression=zipfile.ZIP_STORED)):
        cuts = sorted(rng.sample(range(len(valid)), 60))
        outcomes = _outcomes(
            [valid[:c] for c in cuts] + [valid[c:] for c in cuts[1:]], manifest, tmp_path
        )
        assert None not in outcomes


def test_fuzz_byte_flips_give_rejections_or_success(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    """Half the flips land in the zip's headers and directory, where most bytes matter."""
    rng = random.Random(11)
    seen: set[str | None] = set()
    for valid in (
        zipped(labelmaps(gz=False), compression=zipfile.ZIP_STORED),
        zipped(labelmaps()),
    ):
        headers = [p for _, local in entries(valid) for p in range(local, local + 45)]
        headers += range(valid.rindex(b"PK\x01\x02") - 200, len(valid))
        blobs = []
        for trial in range(150):
            blob = bytearray(valid)
            for _ in range(rng.randint(1, 3)):
                at = rng.choice(headers) if trial % 2 else rng.randrange(len(blob))
                blob[at] = rng.randrange(256)
            blobs.append(bytes(blob))
        seen.update(_outcomes(blobs, manifest, tmp_path))
    assert {"corrupt", None} <= seen  # voxel flips fail the CRC; timestamp flips pass


_HEADER_VALUES: dict[str, list[Any]] = {
    "sizeof_hdr": [0, 540, -1],
    "dim": [-1, 0, 1, 2, 3, 4, 7, 8, 24, 40, 30000, 32767, -32768],
    "datatype": [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2304, 99],
    "bitpix": [0, 1, 8, 16, 64, 255],
    "pixdim": [np.nan, np.inf, -np.inf, -1.5, 0.0, 1.0, 1.5, 2.5, 1e30, -1.0],
    "vox_offset": [np.nan, np.inf, -1.0, 0.0, 348.0, 351.0, 352.0, 352.5, 368.0, 6e4, 1e9],
    "scl_slope": [np.nan, 0.0, 1.0, 2.0, -1.0, np.inf],
    "scl_inter": [np.nan, 0.0, 1.0, np.inf],
    "qform_code": [-1, 0, 1, 2, 3, 4, 5, 1000],
    "sform_code": [-1, 0, 1, 2, 3, 4, 5, 1000],
    "quatern_b": [0.0, np.nan, 0.5, 1.0, 2.0, -1.0],
    "quatern_c": [0.0, np.nan, 0.5, 1.0, 2.0],
    "quatern_d": [0.0, np.nan, 0.7, 1.0, 1e20],
    "qoffset_x": [-30.0, 0.0, np.nan, np.inf],
    "srow_x": [np.nan, 0.0, 1.5, -30.0, 1e38],
    "srow_y": [np.nan, 0.0, 1.5, -30.0],
    "srow_z": [np.nan, 0.0, 2.5, -30.0],
    "magic": [b"n+1", b"ni1", b"n+2", b"", b"\xff\xff\xff"],
    "extents": [0, 16384, -1],
    "intent_code": [0, 1002, 2005, -1],
}


def _mutated_header(rng: random.Random) -> bytes:
    header = nib.Nifti1Header(nii(gz=False)[:348], check=False)
    for key in rng.sample(sorted(_HEADER_VALUES), rng.randint(1, 3)):
        value = rng.choice(_HEADER_VALUES[key])
        current = header[key]
        if np.ndim(current) and not isinstance(value, bytes):
            current = current.copy()
            current[rng.randrange(current.size)] = value
            value = current
        header[key] = value
    return header.binaryblock


def test_fuzz_header_fields_give_rejections_or_readable_images(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    """Accepted means assay's reader (as the scorer uses it) reads the file on the case grid
    with the manifest's labels; anything else must be a RejectedUpload."""
    rng = random.Random(5)
    voxels = nii(gz=False)[348:]
    seen: set[str | None] = set()
    for trial in range(250):
        raw = _mutated_header(rng) + voxels
        if trial % 3 == 0:  # 64 bytes of extensions with an esize of any kind, then voxels
            esize = rng.choice([0, 4, 8, 16, 32, 48, 64, 80, 1 << 30, -16])
            block = struct.pack("<2i", esize, 6) + rng.randbytes(56)
            raw = patched(raw[:348], 108, "<f", 416.0) + b"\x01\0\0\0" + block + voxels[4:]
        gz = trial % 2 == 0
        name = "case0000.nii.gz" if gz else "case0000.nii"
        path = write(tmp_path, "fuzz.zip", zipped({name: gzip.compress(raw) if gz else raw}))
        code = rejection(path, manifest, allow_missing=True)
        seen.add(code)
        if code is None:
            dest = tmp_path / f"out{trial}"
            extract_archive(path, manifest, dest, allow_missing=True)
            image = read_image(dest / name)
            assert image.array.shape == SHAPE
            np.testing.assert_allclose(image.affine, affine(), atol=1e-4)
            assert set(np.unique(image.array).tolist()) <= {0, 1, 2, 3}
    assert None in seen and {"bad_nifti", "bad_geometry"} <= seen
