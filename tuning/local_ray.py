"""The Ray an entry point starts on this machine listens on 127.0.0.1 only.

On Linux a local Ray binds its GCS, raylet, workers and agents to the machine's network
address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which Ray reads when it is
imported (its child processes inherit it). So an entry point calls
:func:`keep_local_ray_on_loopback` before anything imports ``ray``, and starts Ray with
:func:`start_ray`. With a cluster address (``--address`` or ``RAY_ADDRESS``) nothing
changes: the job joins that cluster.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Sequence

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _cluster_address(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--address="):
            return arg.split("=", 1)[1]
        if arg == "--address" and i + 1 < len(argv):
            return argv[i + 1]
    return os.environ.get("RAY_ADDRESS") or None


def keep_local_ray_on_loopback(argv: Sequence[str] | None = None) -> None:
    """Keep a local Ray (no cluster address in ``argv`` or the environment) on 127.0.0.1.

    Call it before ``import ray`` (directly or through a module that imports it).
    """
    if _cluster_address(sys.argv[1:] if argv is None else argv) is not None:
        return
    if "ray" in sys.modules and LOOPBACK_ENV not in os.environ:  # too late: Ray has read its settings
        raise RuntimeError("keep_local_ray_on_loopback() must run before ray is imported")
    os.environ.setdefault(LOOPBACK_ENV, "0")


def start_ray(address: str | None = None, **init_kwargs) -> None:
    """``ray.init`` for an entry point: joins ``address`` / ``$RAY_ADDRESS`` or starts a local Ray.

    SIGTERM then exits through Python's normal shutdown, so the local Ray is stopped (its
    processes and ports released) instead of being left behind.
    """
    import ray

    if ray.is_initialized():
        return
    if threading.current_thread() is threading.main_thread():  # the only thread that may set handlers
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ray.init(address=address or os.environ.get("RAY_ADDRESS"), **init_kwargs)
