"""One name for the shipped policy everywhere, and a hub id that cannot be fetched fails in seconds.

``--model sketchmind-tiny`` resolves to the shipped folder (per mode) in ``load_policy``, the one place models
are loaded; a policy loaded from that folder is named ``sketchmind-tiny``. A made-up hub id, with the hub
unreachable (an endpoint on a loopback port nobody listens on) and ``HF_HUB_OFFLINE`` unset, fails in one
line within seconds instead of retrying for minutes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sketchmind.models import default, hub
from sketchmind.models.default import DEFAULT_POLICY, ShippedPolicyMissing, is_shipped, resolve_model, shipped_policy
from sketchmind.models.loading import load_policy

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "policies" / DEFAULT_POLICY


def test_the_name_resolves_to_the_shipped_folder_per_mode() -> None:
    assert resolve_model(DEFAULT_POLICY) == str(SHIPPED / "draw") == resolve_model(DEFAULT_POLICY, "text")
    assert resolve_model(DEFAULT_POLICY, "latent") == str(SHIPPED / "latent") == resolve_model(DEFAULT_POLICY, "auto")
    for other in ("openai:sketchmind-tiny", "Qwen/Qwen2.5-VL-3B-Instruct", "expert", "./sketchmind-tiny"):
        assert resolve_model(other) == other
    assert is_shipped(SHIPPED / "draw") and is_shipped(str(SHIPPED / "latent") + "/")
    assert not is_shipped(SHIPPED) and not is_shipped("openai:x")


def test_a_missing_shipped_policy_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default, "shipped_policy", lambda mode="draw": None)
    with pytest.raises(ShippedPolicyMissing, match=r"no sketchmind-tiny policy .*make policy") as missing:
        load_policy(DEFAULT_POLICY)
    assert isinstance(missing.value, FileNotFoundError) and "\n" not in str(missing.value)


def test_the_shipped_policy_is_named_sketchmind_tiny_however_it_is_given() -> None:
    from sketchmind.bench.runner import BenchConfig, _make_policy
    from sketchmind.demo.models import DEFAULT, policy_spec
    from sketchmind.models.latent import LatentPolicy

    assert load_policy(DEFAULT_POLICY).name == DEFAULT_POLICY
    assert load_policy(str(shipped_policy("draw"))).name == DEFAULT_POLICY  # its folder, as a path
    latent = load_policy(DEFAULT_POLICY, mode="latent")
    assert isinstance(latent, LatentPolicy) and latent.name == DEFAULT_POLICY
    assert _make_policy(BenchConfig("maze", DEFAULT_POLICY)).name == DEFAULT_POLICY
    assert policy_spec(DEFAULT_POLICY, "latent") == policy_spec(DEFAULT, "latent") == str(SHIPPED / "latent")


def test_serve_takes_no_model_and_names_the_default() -> None:
    from sketchmind.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.model is None and args.name is None


def _closed_port() -> tuple[socket.socket, int]:
    """A loopback port that is bound but not listening: connections to it are refused at once."""
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    return reserved, int(reserved.getsockname()[1])


def test_the_hub_probe_tells_a_listener_from_a_closed_port() -> None:
    reserved, port = _closed_port()
    with reserved, socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert hub.reachable(f"http://127.0.0.1:{listening.getsockname()[1]}", timeout=2)
        started = time.monotonic()
        assert not hub.reachable(f"http://127.0.0.1:{port}", timeout=2)
        assert not hub.reachable("http://unresolvable.invalid", timeout=2)
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("command", ["serve", "solve"])
def test_an_unfetchable_hub_id_fails_in_seconds_with_one_line(command: str) -> None:
    reserved, port = _closed_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"  # no network, deterministically
    extra = ["--blank", "q"] if command == "solve" else []
    started = time.monotonic()
    with reserved:
        done = subprocess.run(
            [sys.executable, "-m", "sketchmind", command, "--model", "nobody/not-a-model", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
        )
    seconds = time.monotonic() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3 and len(lines) == 1, done.stderr[-2000:]
    assert "'nobody/not-a-model' not found locally" in lines[0] and "cannot be reached" in lines[0], lines
    assert seconds < 20, seconds  # the import of torch and transformers, then a refused connect: no retries
