"""A sandbox for participant model commands: no network, another user, resource limits.

The private test-set service runs models it does not trust (``submission_kind: model``).
:class:`Sandbox` makes :func:`~assay.models.run_case` start the command

* in a new, empty network namespace (``unshare --net``: no interface but a downed loopback,
  so no connection to the service, the database or anything else succeeds);
* as an unprivileged user (``nobody`` by default): it cannot read what that user may not
  (keep reference folders ``chmod -R go-rwx``), nor write outside the folders handed to it
  and the world-writable ones (``/tmp``);
* under ``RLIMIT_AS`` (memory), ``RLIMIT_NPROC`` (processes of that user: fork bombs stop),
  ``RLIMIT_FSIZE`` (file size), ``RLIMIT_CORE`` = 0, ``RLIMIT_CPU``;
* with a clean environment (``PATH``, ``HOME``, ``LANG`` and the spec's own variables): no
  token, database URL or path of the service's environment reaches it.

It needs root (to create the namespace and switch user) and util-linux ``unshare``;
:meth:`Sandbox.check` says what is missing. It is not a container: the command sees the
machine's file system with that user's rights.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from assay.errors import InputError

_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Sandbox:
    """Limits of a sandboxed command (see the module docstring)."""

    uid: int = 65534
    gid: int = 65534
    memory_mb: int = 8192
    max_processes: int = 64
    max_file_mb: int = 4096
    cpu_s: int = 3600

    def check(self) -> None:
        """Raise :class:`InputError` when this machine cannot sandbox (not root, no unshare)."""
        if os.geteuid() != 0:
            raise InputError(
                "Model submissions need a sandbox: run the worker as root (it creates a network "
                "namespace and switches to an unprivileged user), or score prediction phases only."
            )
        if shutil.which("unshare") is None:
            raise InputError(
                "Model submissions need util-linux `unshare` (apt-get install util-linux)."
            )
        probe = subprocess.run(
            [*self.prefix(), "true"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode != 0:
            raise InputError(
                "`unshare --net --setuid` fails here ("
                f"{probe.stderr.decode(errors='replace').strip() or probe.returncode}); "
                "model submissions cannot be sandboxed on this machine."
            )

    def prefix(self) -> list[str]:
        """The argv prefix that enters the sandbox."""
        return ["unshare", "--net", "--setgid", str(self.gid), "--setuid", str(self.uid), "--"]

    def environment(self, extra: Mapping[str, str], home: Path | None) -> dict[str, str]:
        """The command's whole environment: nothing inherited but ``PATH`` and ``LANG``."""
        env = {"PATH": _PATH, "LANG": "C.UTF-8", "HOME": str(home or "/nonexistent")}
        env.update({str(k): str(v) for k, v in extra.items()})
        return env

    def limits(self) -> Callable[[], None]:
        """A ``preexec_fn`` that sets the resource limits (inherited through ``unshare``)."""
        memory = self.memory_mb * 1024 * 1024
        fsize = self.max_file_mb * 1024 * 1024

        def apply() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_NPROC, (self.max_processes, self.max_processes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_s, self.cpu_s))

        return apply

    def hand_over(self, path: Path) -> None:
        """Let the sandbox user write ``path`` (a folder assay made for its outputs)."""
        os.chown(path, self.uid, self.gid)
        path.chmod(0o700)
