"""End to end on a real Ray cluster: `ray start --head` in a subprocess, `nas search --address`, stop."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

RAY = Path(sys.executable).with_name("ray")
NAS = [sys.executable, "-m", "nas.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_env(tmp_path: Path) -> dict[str, str]:
    """Token authentication with a token of this test's own, for the head and the joining driver alike:
    without RAY_AUTH_MODE, `ray start` turns authentication on only where ``~/.ray/auth_token`` exists."""
    token = tmp_path / "ray_auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head node of 2 CPUs in its own process group; stopped by signalling that group only
    (`ray stop` would also stop every other Ray on the machine)."""
    port = free_port()
    command = [
        *(str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"),
        *("--disable-usage-stats", "--node-ip-address=127.0.0.1", "--block"),
    ]
    with open(tmp_path / "head.log", "w") as log:
        head = subprocess.Popen(
            command, env=token_env(tmp_path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert head.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield f"127.0.0.1:{port}"
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def test_nas_search_joins_a_running_ray_head_with_the_smoke_config(tmp_path, ray_head) -> None:
    run_dir = tmp_path / "run"
    # Without the cluster's token a joining driver is refused in one line that says where the token goes.
    tokenless = {**token_env(tmp_path), "HOME": str(tmp_path / "home"), "NAS_CACHE_DIR": str(tmp_path / "cache")}
    del tokenless["RAY_AUTH_TOKEN_PATH"]
    command = [*NAS, "search", "--config", "launch/configs/smoke.yaml", "--out", str(run_dir), "--address", ray_head]
    refused = subprocess.run(command, env=tokenless, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr[-3000:]
    assert refused.stderr.startswith("nas: error: cannot reach the Ray cluster") and "RAY_AUTH_TOKEN" in refused.stderr
    assert not run_dir.exists()
    env = {**token_env(tmp_path), "NAS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"joined the Ray cluster at {ray_head}" in done.stderr
    table = pd.read_parquet(run_dir / "trials.parquet")
    assert len(table) == 6 and (table["status"] == "ok").all() and table["trial_id"].is_unique
    assert "6 trials (ok 6" in done.stdout and "baseline: deeplabv3-resnet50" in done.stdout
