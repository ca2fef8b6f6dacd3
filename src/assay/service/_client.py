"""HTTP clients of the service: ``assay submit`` and the remote scorer's job source."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from assay.errors import InputError
from assay.io import IMAGE_SUFFIXES


def zip_predictions(folder: str | Path) -> bytes:
    """Zip a prediction folder (``CASE.nii.gz`` label maps or ``CASE/STRUCTURE.nii.gz``
    masks) in memory, names relative to the folder; refuses links and empty folders."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"No prediction folder {root}; pass the folder of your predictions.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"The prediction folder {root} has no files.")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in files:
            if file.is_symlink():
                raise InputError(f"{file} is a symbolic link; copy the file instead.")
            if not file.name.lower().endswith(tuple(IMAGE_SUFFIXES)):
                continue
            zf.write(file, file.relative_to(root).as_posix())
    return buffer.getvalue()


def _chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class ServiceClient:
    """A thin client of the service's API (httpx); errors are :class:`InputError` lines."""

    def __init__(self, url: str, token: str, *, timeout: float = 120.0) -> None:
        import httpx

        self.url = url.rstrip("/").removesuffix("/v1")
        if not self.url.startswith(("http://", "https://")):
            raise InputError(f"--url {url!r} needs its scheme, e.g. http://{url} or https://{url}.")
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InputError(
                f"Cannot reach the service at {self.url} ({type(exc).__name__}: {exc}); check "
                "--url and that the service is running."
            ) from None

    def _check(self, response: Any) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
                if "code" in body:
                    message = f"{body['code']}: {body.get('message')}"
                else:
                    message = str(body.get("detail", body))[:300]
            except ValueError:
                message = response.text[:200]
            raise InputError(f"{self.url} answered {response.status_code}: {message}")
        return response.json()

    def submit(
        self, phase: str, data: bytes, *, idempotency_key: str | None = None, label: str = ""
    ) -> dict[str, Any]:
        """Upload a zip (streamed in 1 MiB chunks); returns the submission view."""
        headers = {"Content-Type": "application/zip"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if label:
            if len(label) > 200:
                raise InputError(f"--label has {len(label)} characters; at most 200.")
            headers["X-Submission-Label"] = quote(label, safe="")
        out: dict[str, Any] = self._check(
            self._send(
                "POST", f"/v1/phases/{phase}/submissions", content=_chunks(data), headers=headers
            )
        )
        return out

    def submission(self, sid: str) -> dict[str, Any]:
        """A submission's view."""
        out: dict[str, Any] = self._check(self._send("GET", f"/v1/submissions/{sid}"))
        return out

    def wait(self, sid: str, *, timeout_s: float = 600.0, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll a submission until it leaves the active states."""
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.submission(sid)
            if (
                view["state"] not in ("validating", "queued", "scoring")
                or time.monotonic() > deadline
            ):
                return view
            time.sleep(poll_s)

    def get(self, path: str) -> Any:
        """GET a path of the API (JSON)."""
        return self._check(self._send("GET", path))

    def post(self, path: str, json: Any = None) -> Any:
        """POST JSON to a path of the API."""
        return self._check(self._send("POST", path, json=json))


class HttpSource:
    """A remote scorer's job source: the service's worker routes, outbound requests only."""

    def __init__(self, url: str, token: str, *, lease_s: float = 60.0) -> None:
        self.client = ServiceClient(url, token)
        self.lease_s = lease_s
        self.worker = "remote"

    def close(self) -> None:
        """Close the connections."""
        self.client.close()

    def claim(
        self, kinds: Sequence[str], reference_sets: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"kinds": list(kinds)}
        if reference_sets is not None:
            body["reference_sets"] = list(reference_sets)
        job: dict[str, Any] | None = self.client.post(
            f"/v1/worker/claim?lease_s={self.lease_s}", body
        )["job"]
        return job

    def heartbeat(self, job_id: int) -> bool:
        return bool(
            self.client.post(f"/v1/worker/jobs/{job_id}/heartbeat?lease_s={self.lease_s}")["ok"]
        )

    def fetch_archive(self, ctx: Mapping[str, Any], dest: Path) -> Path:
        response = self.client._send("GET", f"/v1/worker/jobs/{ctx['job_id']}/archive")
        if response.status_code != 200:
            raise InputError(
                f"Cannot download the archive of job {ctx['job_id']}: {response.status_code}"
            )
        path = dest / "submission.zip"
        path.write_bytes(response.content)
        return path

    def complete(self, job_id: int, rows: pd.DataFrame) -> str:
        records = [
            {**r, "value": None if pd.isna(r["value"]) else float(r["value"])}
            for r in rows.to_dict(orient="records")
        ]
        return str(
            self.client.post(f"/v1/worker/jobs/{job_id}/complete", {"rows": records})["state"]
        )

    def fail(self, job_id: int, *, infra: bool, code: str, reason: str) -> str:
        body = {"infra": infra, "code": code, "reason": reason}
        return str(self.client.post(f"/v1/worker/jobs/{job_id}/fail", body)["state"])

    def reap(self) -> int:
        return int(self.client.post("/v1/worker/reap")["requeued"])
