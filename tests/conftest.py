from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the hand-written reference network, benchmark helpers


@pytest.fixture(autouse=True)
def _seeded_single_thread() -> None:
    # Two test workers share two cores: one intra-op thread each avoids oversubscription.
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_ray_token_and_cache(tmp_path_factory) -> Iterator[None]:
    """Nothing outside the test's temporary folders: a Ray token of the suite's own (Ray otherwise
    reads, or writes, ``~/.ray/auth_token``) and a scene cache of its own (default ``~/.cache``).
    Ray processes inherit the environment, so the token reaches every head, worker and driver."""
    folder = tmp_path_factory.mktemp("home")
    token = folder / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "NAS_CACHE_DIR")}
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.setdefault("NAS_CACHE_DIR", str(folder / "cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def local_ray(monkeypatch, tmp_path) -> Iterator[None]:
    """A private two-CPU Ray for one test. Its workers inherit the environment at start, so the scene
    cache is the test's own from the first trial."""
    import ray

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()
