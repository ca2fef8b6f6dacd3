"""A throwaway PostgreSQL server for the tests, from Debian's PostgreSQL binaries.

``start()`` runs ``initdb`` and ``pg_ctl`` (found on PATH or in ``/usr/lib/postgresql/*/bin``)
on a data folder and Unix socket in a fresh temporary folder, listening on 127.0.0.1 at a free
port, with trust authentication; ``PgServer.stop()`` stops it and deletes the folder. As root
the server runs as the ``postgres`` user (PostgreSQL refuses to run as root). When
``ASSAY_TEST_POSTGRES_URL`` is set (a URL whose role may create databases), that server is used
instead and nothing is started. Each test gets its own database from ``PgServer.database()``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

ENV = "ASSAY_TEST_POSTGRES_URL"
INSTALL = "apt-get install -y -q postgresql"


class ServerUnavailableError(RuntimeError):
    """No PostgreSQL server could be started or reached (the message says why, in one line)."""


@dataclass
class PgServer:
    """A reachable server: ``admin_url`` (SQLAlchemy URL) may create databases."""

    admin_url: str
    folder: Path | None = None  # set when this module started the server
    bindir: Path | None = None
    databases: list[str] = field(default_factory=list)

    def database(self) -> str:
        """A new, empty database (ICU en-US collation where the server has ICU, so that any
        reliance on byte-order sorting shows) and its SQLAlchemy URL."""
        name = f"assay_test_{uuid.uuid4().hex[:12]}"
        with self._admin() as con:
            try:
                con.execute(
                    f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                    "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                )
            except psycopg.Error:
                con.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        self.databases.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def stop(self) -> None:
        """Drop the databases made here; stop and delete a server started here."""
        if self.folder is None:
            try:
                with self._admin() as con:
                    for name in self.databases:
                        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error:
                pass
            return
        assert self.bindir is not None
        subprocess.run(
            _as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m",
                       "immediate", "-w", "stop"]),
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)

    def _admin(self) -> psycopg.Connection:
        url = make_url(self.admin_url)
        return psycopg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password,
            dbname=url.database or "postgres", autocommit=True, connect_timeout=10,
        )  # fmt: skip


def start() -> PgServer:
    """The server named by ``ASSAY_TEST_POSTGRES_URL``, else a private one started here."""
    if os.environ.get(ENV):
        server = PgServer(admin_url=os.environ[ENV])
        try:
            server._admin().close()
        except psycopg.Error as exc:
            raise ServerUnavailableError(
                f"cannot connect to {ENV}={os.environ[ENV]}: {_first_line(exc)}"
            ) from exc
        return server
    bindir = _bindir()
    folder = Path(tempfile.mkdtemp(prefix="assay-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        _run("initdb", _as_owner([str(bindir / "initdb"), "-D", str(folder / "data"), "-U",
                                  "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
                                  "--no-sync"]))  # fmt: skip
        last = ""
        for _ in range(5):  # a free port may be taken between choosing and binding it
            port = _free_port()
            options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -F"
            done = subprocess.run(
                _as_owner([str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-l",
                           str(folder / "server.log"), "-o", options, "-w", "-t", "60",
                           "start"]),
                capture_output=True, text=True, check=False, timeout=90,
            )  # fmt: skip
            if done.returncode == 0:
                return PgServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
                                folder=folder, bindir=bindir)  # fmt: skip
            last = _log_tail(folder / "server.log") or done.stderr.strip() or done.stdout.strip()
        raise ServerUnavailableError(f"pg_ctl start failed: {last}")
    except (OSError, LookupError, subprocess.SubprocessError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise ServerUnavailableError(
            f"cannot start PostgreSQL from {bindir}: {_first_line(exc)}"
        ) from exc
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found and Path(found).resolve().with_name("initdb").exists():
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if not candidates:
        raise ServerUnavailableError(
            f"PostgreSQL binaries (pg_ctl, initdb) not found; run `{INSTALL}`"
        )
    return Path(candidates[-1]).parent


def _as_owner(cmd: list[str]) -> list[str]:
    """Run as ``postgres`` when root (the server refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(what: str, cmd: list[str]) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    except OSError as exc:
        raise ServerUnavailableError(f"{what} could not run: {exc}") from exc
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ServerUnavailableError(f"{what} failed: {why[-1] if why else done.returncode}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
