"""A Ray head started with the ``ray`` CLI, as a user would (README "Running on a cluster"):
the ``head`` fixture, registered for every test module by tests/conftest.py's pytest_plugins."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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


def agent_ports() -> list[str]:
    """Free ports for a node's agents: their defaults are fixed (the job agent's is 52365), so a
    second Ray on the machine (another test run, a user's) would leave this head without a job
    agent ("No available agent to submit job")."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


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
    port, dash = free_port(), free_port()
    # A temp dir of its own, so that teardown stops this cluster only (`ray stop` would stop
    # every Ray on the machine, other users' and other tests' included).
    temp_dir = tempfile.mkdtemp(prefix="raytest-", dir="/tmp")
    subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=1",
                    f"--temp-dir={temp_dir}", "--disable-usage-stats", *agent_ports()],
                   env=ENV, check=True, capture_output=True, timeout=120)
    yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
    subprocess.run(["pkill", "-9", "-f", temp_dir], capture_output=True)
    time.sleep(2)
    shutil.rmtree(temp_dir, ignore_errors=True)
