"""Which Ray an entry point runs on, and a local one that listens on 127.0.0.1 only.

:func:`start_ray` joins a cluster only when told: ``--address`` or ``RAY_ADDRESS`` (which
``ray job submit`` sets for its jobs). Without either it starts a local Ray, even when a
cluster was started on this machine with ``ray start``: a bare ``ray.init()`` would join that
one (Ray 2.60 reads the address the last ``ray start`` wrote to
``/tmp/ray/ray_current_cluster``), so a plain run's resources would depend on what else was
started before it. It prints which Ray the job runs on: address, nodes, CPUs, GPUs.

On Linux a local Ray binds its GCS, raylet, workers and agents to the machine's network
address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which Ray reads when it is
imported (its child processes inherit it). So an entry point calls
:func:`keep_local_ray_on_loopback` before anything imports ``ray``. With a cluster address
nothing changes: the job joins that cluster.
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


def describe_ray(how: str) -> str:
    """One line: ``how`` the job got its Ray, its address, alive nodes, CPUs and GPUs."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    resources = ray.cluster_resources()
    return (f"Ray: {how}: GCS {ray.get_runtime_context().gcs_address}, {nodes} node{'s' if nodes != 1 else ''}, "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")


def start_ray(address: str | None = None, **init_kwargs) -> str:
    """``ray.init`` for an entry point: joins ``address`` / ``$RAY_ADDRESS``, else starts a local
    Ray (never the cluster of an earlier ``ray start``); prints and returns :func:`describe_ray`.

    SIGTERM then exits through Python's normal shutdown, so the local Ray is stopped (its
    processes and ports released) instead of being left behind.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        line = describe_ray("already started in this process")
    else:
        if threading.current_thread() is threading.main_thread():  # the only thread that may set handlers
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        # "local": Ray's own word for "start one", which skips its search for a running cluster.
        ray.init(address=address or "local", **init_kwargs)
        line = describe_ray(f"joined the cluster at {address}" if address else
                            "started a local Ray (no --address or RAY_ADDRESS; a `ray start` cluster is not joined)")
    print(line, flush=True)
    return line
