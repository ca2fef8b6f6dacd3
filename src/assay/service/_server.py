"""Running the API under uvicorn: in the foreground (``assay serve``) or in a background
thread on loopback (the quick start, tests and the load benchmark)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from assay.errors import InputError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (or 0) before anything is started or applied."""
    if port <= 0:
        raise InputError(f"--port {port}: give a port number, e.g. --port 8000.")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InputError(
                f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port."
            ) from None


def wait_until_serving(
    url: str,
    process: subprocess.Popen[bytes] | None = None,
    *,
    log: Path | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Wait until ``url``/v1/health answers (an ``assay serve`` started in ``process``);
    :class:`InputError` with the server's log when it exits or does not answer in time."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        died = process is not None and process.poll() is not None
        if died or time.monotonic() > deadline:
            shown = log.read_text(errors="replace") if log is not None and log.exists() else ""
            what = "exited" if died else f"did not answer in {timeout_s:g} s"
            raise InputError(f"The service at {url} {what}. {shown}".strip())
        time.sleep(0.1)


def serve_forever(app: Any, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


class BackgroundServer:
    """uvicorn serving ``app`` on ``host:port`` from a thread (``with`` stops it)."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="assay-api", daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise InputError(f"The service did not start on {self.url}.")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
