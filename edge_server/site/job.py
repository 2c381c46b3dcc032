"""``python -m edge_server.site.job``: the process one site job runs in on a lender's machine.

Started by the task (:mod:`.task`) with its working directory as cwd and
``TMPDIR``, and the site's apps first on ``PYTHONPATH``; reads its settings
as JSON on stdin, then is the same worker as on an edge server
(:func:`edge_server.worker.run_worker`): per-job limits on itself, restricted
loading of arguments and checkpoints, the fingerprint check, and a Unix
socket back to its task.
"""

from __future__ import annotations

import json
import sys

from ..config import ServerConfig
from ..worker import run_worker


def config_of(spec: dict) -> ServerConfig:
    """The worker's configuration from the task's JSON settings."""
    limits = spec.get("limits", {})
    return ServerConfig(
        apps=tuple(spec["modules"]),
        types=tuple(spec.get("types", ())),
        workers=1,
        max_message_size=int(spec["max_message_size"]),
        compression=spec.get("compression", "auto"),
        limit_memory=limits.get("memory"),
        limit_cpu=limits.get("cpu"),
        limit_files=limits.get("files"),
        limit_processes=limits.get("processes"),
        limit_disk=limits.get("disk"),
    )


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    sys.path.insert(0, spec["apps_dir"])
    run_worker(b"site", spec["socket"], config_of(spec), spec["arena_dir"], spec["prefix"])


if __name__ == "__main__":
    main()
