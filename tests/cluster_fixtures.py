"""A Ray head started with the ``ray`` CLI, as a user would (README "Running on a cluster"):
the ``head`` fixture, registered for every test module by tests/conftest.py's pytest_plugins."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
# A job's `python` is the first on PATH: this interpreter's, activated or not.
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
       "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_ports(head: bool) -> list[str]:
    """Free ports for what Ray otherwise binds at fixed defaults (the job agent's 52365, the client
    server's 10001), so that a second Ray on the machine (another test's, still stopping; a user's)
    does not leave this node without a job agent ("No available agent to submit job") or fail
    to start."""
    ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    return [*ports, f"--ray-client-server-port={free_port()}"] if head else ports


def processes_in(session: int) -> list:
    """The live processes of session ``session`` (zombies are gone already)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) == session:
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            pass
    return found


def stop_ray(session: int) -> None:
    """Kill the Ray that `ray start` began in ``session``, by process id (`ray stop` would stop
    every Ray on the machine), until none is left (a raylet being killed may start a worker)."""
    import psutil

    for _ in range(5):
        procs = processes_in(session)
        if not procs:
            return
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)


def ray_start(arguments: Callable[[], tuple[list[str], object]], env: dict) -> tuple[object, int]:
    """Run `ray start` with the arguments and the result that ``arguments()`` returns; return the
    result and the session of the Ray it started (for ``stop_ray``).

    `ray start` runs in a session of its own, which every process of its Ray inherits: some of
    them (the agents, the client server) name neither the temp dir nor the node in their command
    line. Ports are picked free a moment before Ray binds them, so another process can take one
    in between: a failed start is stopped and tried once more with fresh ports, the first
    failure shown as a warning. Two failures fail the test with Ray's own words.
    """
    failures = []
    for _ in range(2):
        args, result = arguments()
        start = subprocess.Popen([RAY, "start", *args, "--disable-usage-stats", *default_ports("--head" in args)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        try:
            out, err = start.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            start.kill()
            out, err = start.communicate()
        if start.returncode == 0:
            if failures:
                warnings.warn(f"`ray start` failed once, then started:\n{failures[0]}", stacklevel=2)
            return result, start.pid
        failures.append(f"`ray start {' '.join(args)}` exited {start.returncode}:\n{out[-1500:]}\n{err[-3000:]}")
        stop_ray(start.pid)
    pytest.fail("\n\n".join(failures))


@pytest.fixture(params=["loopback"])
def head(request, tmp_path, monkeypatch):
    """A Ray head with token authentication; yields (gcs address, dashboard address).

    "loopback": everything on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), as the README
    shows. "multinode": Ray then refuses other nodes, so a second node on this machine needs
    the variable at 1, and Ray advertises the machine's address; the token still guards it.
    """
    import ray

    ray.shutdown()  # no in-process Ray from other tests
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    monkeypatch.setitem(ENV, "RAY_AUTH_MODE", "token")  # every node and client shares the token
    monkeypatch.setitem(ENV, "RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setitem(ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1" if request.param == "multinode" else "0")
    # A temp dir of its own: this cluster's sockets, logs and session files stay apart from other
    # Rays on the machine, and go with it (its processes are stopped by session, see stop_ray).
    temp_dir = tempfile.mkdtemp(prefix="raytest-", dir="/tmp")

    def head_arguments():
        port, dash = free_port(), free_port()
        return (["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
                 f"--dashboard-port={dash}", "--num-cpus=1", f"--temp-dir={temp_dir}"],
                (f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"))

    addresses, session = ray_start(head_arguments, ENV)
    yield addresses
    stop_ray(session)
    shutil.rmtree(temp_dir, ignore_errors=True)
