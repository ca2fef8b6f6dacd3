"""Running a model's command per case: timeout, environment, working directory, fault capture.

A runner is a command template such as ``mymodel predict -i {input} -o {output}``. For each
case, :func:`run_case` removes stale outputs, runs the command (no shell: the template is split
with :func:`shlex.split` first, then each word's placeholders are filled, so paths with spaces
stay one argument), times it, and checks what it wrote. A model fault (crash, hang, nothing
written, wrong geometry, unreadable file, missing executable) never raises: it is recorded as a
failed :class:`InferenceRecord` with a one-line reason, and the case's outputs are removed so a
half-written prediction is never scored.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import nibabel as nib
import numpy as np

from assay.errors import InputError
from assay.io import GRID_ATOL, image_suffix, read_image
from assay.models._sandbox import Sandbox

__all__ = ["BatchTask", "InferenceRecord", "InferenceTask", "RunnerSpec", "run_batch", "run_case"]

PLACEHOLDERS: Final[tuple[str, ...]] = ("input", "output", "output_file", "case")
BATCH_PLACEHOLDERS: Final[tuple[str, ...]] = ("input_dir", "output_dir")
_KEYS: Final[tuple[str, ...]] = (
    "command", "timeout_s", "env", "cwd", "batch_size", "input_name", "workers",
)  # fmt: skip
_MAX_MESSAGE: Final = 300


@dataclass(frozen=True)
class RunnerSpec:
    """How to run a model on one case.

    Parameters
    ----------
    command : str
        Command template; placeholders ``{input}`` (the case's image), ``{output}`` (an empty
        folder ``output_dir/<case_id>`` for per-structure files), ``{output_file}``
        (``output_dir/<case_id>.nii.gz`` for a label map) and ``{case}`` (the case id). Literal
        braces are written ``{{`` and ``}}``.
    timeout_s : float, default 3600
        Wall-clock limit per case; the whole process group is killed when it is exceeded.
    env : mapping of str to str
        Variables added to the current environment.
    cwd : str or None
        Working directory of the command (None: the current one).
    batch_size : int or None
        Run the command once per batch of this many cases instead of once per case (models
        that load their weights once, such as nnU-Net's folder-to-folder ``predict``). The
        command then uses ``{input_dir}`` (a folder of links to the batch's images, named
        ``input_name``) and ``{output_dir}`` (the model's prediction root: it writes
        ``<case>.nii.gz`` or ``<case>/<structure>.nii.gz``); the timeout applies per case,
        i.e. ``timeout_s × batch size`` per batch, and each case's seconds are the batch's
        wall time shared in proportion to the cases' image volumes.
    input_name : str
        Name of each case's link in ``{input_dir}`` (default ``{case}_0000.nii.gz``, nnU-Net's
        single-channel convention).
    workers : int or None
        How many cases (or batches) of this model run at once (e.g. 1 for a GPU model that
        needs the whole GPU); None: the benchmark's ``workers``. Concurrent runs share the
        machine, so the recorded seconds (and speed) depend on it; it is recorded with them.
    sandbox : Sandbox or None
        Run the command without network, as an unprivileged user, under resource limits and
        with a clean environment (:class:`~assay.models._sandbox.Sandbox`; untrusted models
        of the submission service). Per-case commands only.

    Raises
    ------
    InputError
        On an empty command, an unknown placeholder, per-case placeholders in a batch
        command (or the reverse), a non-positive timeout or batch size.
    """

    command: str
    timeout_s: float = 3600.0
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    batch_size: int | None = None
    input_name: str = "{case}_0000.nii.gz"
    workers: int | None = None
    sandbox: Sandbox | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.command, str) or not self.command.strip():
            raise InputError(
                f"Runner command {self.command!r} is empty; give a template such as "
                "'mymodel predict -i {input} -o {output}'."
            )
        try:
            words = shlex.split(self.command)
            fields = {
                f for w in words for _, f, _, _ in string.Formatter().parse(w) if f is not None
            }
        except ValueError as exc:
            raise InputError(
                f"Runner command {self.command!r} cannot be parsed ({exc}); check its quotes "
                "and braces (write literal braces as '{{' and '}}')."
            ) from None
        batch = self.batch_size is not None
        if batch and self.sandbox is not None:
            raise InputError("A sandboxed runner runs per case; leave batch_size out.")
        allowed = BATCH_PLACEHOLDERS if batch else PLACEHOLDERS
        unknown = sorted(fields - set(allowed))
        if unknown:
            kind = "a batch command (batch_size set)" if batch else "a per-case command"
            raise InputError(
                f"Runner command {self.command!r} uses placeholder(s) "
                f"{', '.join('{' + u + '}' for u in unknown)} not known to {kind}; known: "
                f"{', '.join('{' + p + '}' for p in allowed)}."
            )
        if batch and (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise InputError(f"Runner batch_size {self.batch_size!r} must be a positive integer.")
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise InputError(f"Runner workers {w!r} must be a positive integer.")
        if "{case}" not in self.input_name or "/" in self.input_name:
            raise InputError(
                f"Runner input_name {self.input_name!r} must contain {{case}} and no '/'."
            )
        timeout = self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise InputError(
                f"Runner timeout_s {timeout!r} is invalid; expected a positive number of seconds."
            )
        if not math.isfinite(timeout):
            raise InputError(f"Runner timeout_s {timeout!r} must be finite.")
        object.__setattr__(self, "timeout_s", float(timeout))
        object.__setattr__(self, "env", {str(k): str(v) for k, v in dict(self.env).items()})

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, where: str, base: Path) -> RunnerSpec:
        """Build a spec from a configuration mapping (e.g. a model card's ``runner:``).

        Parameters
        ----------
        raw : mapping
            Keys ``command`` (required), ``timeout_s``, ``env``, ``cwd``.
        where : str
            What the mapping belongs to, for error messages (e.g. ``"model 'x' in run.yaml"``).
        base : pathlib.Path
            Folder a relative ``cwd`` is resolved against (usually the config file's folder).

        Raises
        ------
        InputError
            On a missing command, an unknown key, or a value of the wrong type.
        """
        if not isinstance(raw, Mapping):
            raise InputError(
                f"runner of {where} must be a mapping with keys {', '.join(_KEYS)}; "
                f"got {type(raw).__name__}."
            )
        unknown = sorted(str(k) for k in raw if k not in _KEYS)
        if unknown:
            raise InputError(
                f"Unknown runner key(s) {', '.join(unknown)} for {where}; "
                f"known: {', '.join(_KEYS)}."
            )
        command = raw.get("command")
        if not isinstance(command, str) or not command.strip():
            raise InputError(
                f"runner of {where} needs a 'command' string, e.g. "
                "'mymodel predict -i {input} -o {output}'."
            )
        env = raw.get("env") or {}
        if not isinstance(env, Mapping) or any(
            isinstance(v, Mapping | list | tuple) or v is None for v in env.values()
        ):
            raise InputError(
                f"runner.env of {where} must map variable names to scalar values; got {env!r}."
            )
        cwd = raw.get("cwd")
        if cwd is not None and not isinstance(cwd, str | os.PathLike):
            raise InputError(f"runner.cwd of {where} must be a path string; got {cwd!r}.")
        timeout = raw.get("timeout_s", 3600.0)
        try:
            return cls(
                command=command,
                timeout_s=timeout,
                env={str(k): str(v) for k, v in env.items()},
                cwd=None if cwd is None else str(Path(base) / Path(cwd)),
                batch_size=raw.get("batch_size"),
                input_name=str(raw.get("input_name", "{case}_0000.nii.gz")),
                workers=raw.get("workers"),
            )
        except InputError as exc:
            raise InputError(f"{exc} (runner of {where})") from None


@dataclass(frozen=True)
class InferenceTask:
    """One case to run: its id, input image, the model's prediction root and the runner."""

    case_id: str
    image: Path
    output_dir: Path
    spec: RunnerSpec

    def __post_init__(self) -> None:
        cid = self.case_id
        if not isinstance(cid, str) or not cid or cid in (".", "..") or "/" in cid or "\\" in cid:
            raise InputError(
                f"Invalid case id {cid!r} for inference: it names a file in the output folder, "
                "so it must be non-empty and contain no path separators."
            )
        object.__setattr__(self, "image", Path(self.image))
        object.__setattr__(self, "output_dir", Path(self.output_dir))


@dataclass(frozen=True)
class InferenceRecord:
    """Outcome of running a model on one case.

    ``status`` is ``"ok"``, ``"failed"`` or ``"timeout"``; ``seconds`` is the command's wall
    time (also on failure); ``volume_cm3`` the input image's volume (NaN if unreadable), so
    inference speed is ``volume_cm3 / seconds``; ``message`` says what went wrong and how to
    fix it.
    """

    case_id: str
    status: str
    seconds: float
    volume_cm3: float
    message: str = ""

    @property
    def speed_cm3_per_s(self) -> float:
        """Inference speed in cm³/s (NaN unless the run succeeded)."""
        if self.status != "ok" or not self.seconds > 0:
            return math.nan
        return self.volume_cm3 / self.seconds


def _case_outputs(task: InferenceTask) -> tuple[Path, Path]:
    out = task.output_dir.absolute()
    return out / task.case_id, out / f"{task.case_id}.nii.gz"


def _remove_outputs(folder: Path, file: Path) -> None:
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)
    elif folder.exists() or folder.is_symlink():
        folder.unlink(missing_ok=True)
    if file.is_dir() and not file.is_symlink():
        shutil.rmtree(file, ignore_errors=True)
    else:
        file.unlink(missing_ok=True)


def _input_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray] | None:
    """Shape and affine of the input image from its header (full read for non-NIfTI)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if image_suffix(path) in (".nii", ".nii.gz"):
                header_image: Any = nib.load(path)  # a NIfTI image: shape and affine
                shape = tuple(int(n) for n in header_image.shape)
                if len(shape) > 3 and all(n == 1 for n in shape[3:]):
                    shape = shape[:3]
                return shape, np.asarray(header_image.affine, dtype=np.float64)
            image = read_image(path)
            return image.shape, image.affine
    except Exception:  # any unreadable input just gives a NaN volume
        return None


def _volume_cm3(geometry: tuple[tuple[int, ...], np.ndarray] | None) -> float:
    if geometry is None or len(geometry[0]) != 3:
        return math.nan
    shape, affine = geometry
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return float(math.prod(shape) * math.prod(float(s) for s in spacing) / 1000.0)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - 8192))
    lines = [ln.strip() for ln in stream.read().decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return _one_line(lines[-1]) if lines else ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in np.ravel(values)) + ")"


def _check_outputs(
    folder: Path, file: Path, geometry: tuple[tuple[int, ...], np.ndarray] | None, command: str
) -> str:
    """Empty string when the outputs are usable, else the reason they are not."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    images = [p for p in files if image_suffix(p) is not None]
    if file.is_file():
        images.append(file)
    if not images:
        if files:
            return (
                f"the model wrote no image files ({len(files)} other file(s) in {folder}, "
                f"e.g. {files[0].name}); it must write <structure>.nii.gz files into {{output}} "
                f"or a label map to {{output_file}}"
            )
        return (
            f"the model wrote nothing (no files in {folder} and no {file.name}); check that "
            f"the command {command!r} writes to {{output}} or {{output_file}}"
        )
    for path in images:
        try:
            image = read_image(path)
        except InputError as exc:
            return f"unreadable output {path}: {exc}"
        if geometry is None:
            continue
        shape, affine = geometry
        if image.shape != tuple(shape) or not np.allclose(
            image.affine, affine, rtol=0.0, atol=GRID_ATOL
        ):
            what = (
                f"shape {image.shape} vs {tuple(shape)}"
                if image.shape != tuple(shape)
                else f"affine {_fmt(image.affine[:3])} vs {_fmt(affine[:3])}"
            )
            return (
                f"wrong geometry: {path.name} has {what} of the input image; the model must "
                "write predictions on the input image's grid"
            )
    return ""


def _execute(argv: list[str], spec: RunnerSpec, timeout_s: float) -> tuple[str, float, str]:
    """Run ``argv`` in its own process group; (status, seconds, message) of the run."""
    cwd = None if spec.cwd is None else Path(spec.cwd)
    if cwd is not None and not cwd.is_dir():
        return "failed", 0.0, f"runner working directory {cwd} does not exist; fix runner.cwd"
    env = {**os.environ, **spec.env}
    preexec = None
    if spec.sandbox is not None:
        env = spec.sandbox.environment(spec.env, cwd)
        preexec = spec.sandbox.limits()
        argv = [*spec.sandbox.prefix(), *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except FileNotFoundError:
            return (
                "failed",
                time.perf_counter() - start,
                f"command {argv[0]!r} not found; install the model or fix runner.command "
                "(use a full path if it is not on PATH)",
            )
        except PermissionError:
            return (
                "failed",
                time.perf_counter() - start,
                f"command {argv[0]!r} is not executable; check its permissions",
            )
        except OSError as exc:  # e.g. a script without a '#!' line
            return (
                "failed",
                time.perf_counter() - start,
                f"cannot start command {argv[0]!r} ({exc.strerror or exc}); check runner.command",
            )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            return (
                "timeout",
                time.perf_counter() - start,
                f"timed out after {timeout_s:g} s; raise runner.timeout_s or check the model",
            )
        finally:
            seconds = time.perf_counter() - start
            _kill_group(proc)  # leftover background children of the model
        if code != 0:
            last = _tail(err) or _tail(out)
            if code < 0:
                try:
                    reason = f"killed by signal {signal.Signals(-code).name}"
                except ValueError:
                    reason = f"killed by signal {-code}"
            else:
                reason = f"exit status {code}"
            detail = f"; last stderr line: {last}" if last else "; it printed nothing"
            return "failed", seconds, f"model command failed: {reason}{detail}"
    return "ok", seconds, ""


def run_case(task: InferenceTask) -> InferenceRecord:
    """Run the model command of `task` on its case and check what it wrote.

    Never raises for a model fault: crashes, timeouts, missing executables, missing, unreadable
    or mis-gridded outputs give a record with status ``"failed"`` or ``"timeout"`` and a
    message, and the case's outputs are removed.

    Parameters
    ----------
    task : InferenceTask
        Case id, input image, output root and runner spec.

    Returns
    -------
    InferenceRecord
        Status, wall time of the command in seconds, input volume in cm³, and a message.
    """
    spec = task.spec
    image = task.image.absolute()
    folder, file = _case_outputs(task)
    geometry = _input_geometry(image)
    volume = _volume_cm3(geometry)

    def record(status: str, seconds: float, message: str = "") -> InferenceRecord:
        if status != "ok":
            _remove_outputs(folder, file)
        return InferenceRecord(task.case_id, status, seconds, volume, _one_line(message))

    _remove_outputs(folder, file)
    if not image.is_file():
        return record("failed", 0.0, f"input image {image} does not exist; fix 'image' in the "
                      "dataset card")  # fmt: skip
    folder.mkdir(parents=True)
    if spec.sandbox is not None:
        spec.sandbox.hand_over(folder)
    values = {"input": str(image), "output": str(folder), "output_file": str(file)}
    values["case"] = task.case_id
    argv = [word.format(**values) for word in shlex.split(spec.command)]
    status, seconds, message = _execute(argv, spec, spec.timeout_s)
    if status != "ok":
        return record(status, seconds, message)
    problem = _check_outputs(folder, file, geometry, spec.command)
    if problem:
        return record("failed", seconds, problem)
    if file.is_file() and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # a label-map model: drop the empty per-case folder made for {output}
    return record("ok", seconds)


@dataclass(frozen=True)
class BatchTask:
    """Several cases run by one command (a runner with ``batch_size``)."""

    case_ids: tuple[str, ...]
    images: tuple[Path, ...]
    output_dir: Path
    spec: RunnerSpec


def run_batch(task: BatchTask) -> list[InferenceRecord]:
    """Run a batch command once over ``task``'s cases; one record per case.

    The images are linked into a fresh ``{input_dir}`` (``input_name`` per case); a failed
    command fails every case of the batch with its reason; otherwise each case's outputs are
    checked like :func:`run_case` does (nothing written, unreadable, wrong geometry), and its
    seconds are the batch's wall time times its share of the batch's image volume.
    """
    spec = task.spec
    out = task.output_dir.absolute()
    out.mkdir(parents=True, exist_ok=True)
    geometries = [_input_geometry(image.absolute()) for image in task.images]
    volumes = [_volume_cm3(g) for g in geometries]
    for case in task.case_ids:
        _remove_outputs(out / case, out / f"{case}.nii.gz")
    missing = [str(i) for i in task.images if not i.is_file()]
    inputs = Path(tempfile.mkdtemp(prefix=".assay-batch-", dir=out.parent))
    try:
        for case, image in zip(task.case_ids, task.images, strict=True):
            if image.is_file():
                (inputs / spec.input_name.format(case=case)).symlink_to(image.absolute())
        argv = [w.format(input_dir=str(inputs), output_dir=str(out))
                for w in shlex.split(spec.command)]  # fmt: skip
        status, seconds, message = _execute(argv, spec, spec.timeout_s * len(task.case_ids))
    finally:
        shutil.rmtree(inputs, ignore_errors=True)
    total = sum(v for v in volumes if math.isfinite(v))
    records = []
    for case, image, geometry, volume in zip(
        task.case_ids, task.images, geometries, volumes, strict=True
    ):
        share = seconds * (volume / total if total > 0 and math.isfinite(volume) else 0.0)
        folder, file = out / case, out / f"{case}.nii.gz"
        problem = message
        if status == "ok":
            if str(image) in missing:
                problem = f"input image {image} does not exist; fix 'image' in the dataset card"
            else:
                problem = _check_outputs(folder, file, geometry, spec.command)
        case_status = status if status != "ok" else ("failed" if problem else "ok")
        if case_status != "ok":
            _remove_outputs(folder, file)
        records.append(InferenceRecord(case, case_status, share, volume, _one_line(problem)))
    return records
