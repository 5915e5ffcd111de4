"""Security invariants: no code path runs untrusted data, weights are safetensors, servers stay on loopback.

1. A static scan (``code_scan.py``) of every module we ship finds no eval/exec, pickle-family loads,
   unsafe ``torch.load``/``yaml.load``/``numpy.load``, shell commands or ``trust_remote_code``; the scan is
   shown to fire on a planted snippet, so a clean result means something.
2. The shipped policies hold no pickle-format weights, our loaders ask for safetensors, and a checkpoint
   that only has ``pytorch_model.bin`` is refused in one line without being unpickled.
3. ``sketchmind serve`` binds 127.0.0.1 by default (a real subprocess: reachable on loopback, refused on
   this machine's network address), and binding anything else prints one warning line on stderr.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from code_scan import RULES, python_files, scan_paths, scan_source
from loopback import free_port

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["sketchmind", "tools", "examples", "app.py", "setup.py"]
DRAW_POLICY = ROOT / "policies" / "sketchmind-tiny" / "draw"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}

# One line per rule, each written the way real code would write it (aliases included).
PLANTED = """
import pickle as pk, marshal, shelve, dill, yaml, torch, subprocess, os, builtins
import numpy as np
import pandas as pd
from yaml import unsafe_load
from transformers import AutoModelForCausalLM

eval(text)
exec(code)
compile(src, "f", "exec")
__import__(name)
builtins.eval(text)
pk.loads(blob)
marshal.loads(blob)
shelve.open(path)
dill.load(handle)
torch.load(path)
torch.load(path, weights_only=False)
yaml.load(text, Loader=yaml.Loader)
yaml.full_load(text)
unsafe_load(text)
subprocess.run(command, shell=True)
subprocess.check_output("ls " + folder)
subprocess.Popen(f"rm {path}")
os.system(command)
os.popen(command)
np.load(path, allow_pickle=True)
pd.read_pickle(path)
AutoModelForCausalLM.from_pretrained(name, trust_remote_code=True)
AutoModelForCausalLM.from_pretrained(name)
"""
PLANTED_RULES = (
    ["builtin-eval"] * 5
    + ["pickle-load"] * 4
    + ["torch-load"] * 2
    + ["yaml-load"] * 3
    + ["shell"] * 5
    + ["numpy-pickle", "pandas-pickle", "remote-code", "no-safetensors", "no-safetensors"]
)  # the trust_remote_code line also lacks use_safetensors: two findings

# The safe spellings of the same things, and methods that only share a builtin's name: nothing fires.
SAFE = """
import json, re, yaml, torch, subprocess
import numpy as np
from transformers import AutoModelForImageTextToText, AutoProcessor

json.loads(text)
re.compile(pattern)
model.eval()
graph.compile(checkpointer=None)
yaml.safe_load(text)
torch.load(path, weights_only=True)
subprocess.run([sys.executable, "-m", "sketchmind"], check=True)
subprocess.run(["git", "status"], shell=False)
np.load(path)
np.load(path, allow_pickle=False)
AutoProcessor.from_pretrained(name)
AutoModelForImageTextToText.from_pretrained(name, use_safetensors=True, trust_remote_code=False)
"""


# ------------------------------------------------------------------------------------------- the scan


def test_every_rule_fires_on_a_planted_snippet() -> None:
    findings = scan_source(PLANTED, "planted.py", require_safetensors=True)
    assert [f.rule for f in findings] == PLANTED_RULES, "\n".join(map(str, findings))
    assert set(PLANTED_RULES) == set(RULES)  # every rule the scan knows is proven to fire
    planted = [i for i, line in enumerate(PLANTED.splitlines(), 1) if line and not line.startswith(("import", "from"))]
    assert sorted({f.line for f in findings}) == planted  # every planted line is caught


def test_safe_spellings_and_lookalike_methods_are_not_flagged() -> None:
    assert scan_source(SAFE, "safe.py", require_safetensors=True) == []


def test_shipped_code_never_runs_untrusted_data() -> None:
    files = list(python_files(ROOT, SHIPPED))
    assert len(files) > 50 and ROOT / "app.py" in files  # the walk really covers the package
    findings = scan_paths(files, root=ROOT)
    assert not findings, "\n".join(map(str, findings))


def test_every_model_load_asks_for_safetensors() -> None:
    """Inference, training and the tools alike: no from_pretrained may fall back to pickled .bin weights."""
    files = list(python_files(ROOT, SHIPPED))
    loaders = [f for f in files if "ForImageTextToText.from_pretrained(" in f.read_text()]
    assert len(loaders) >= 5  # inference (hf, latent) and training (sft, grpo, latent): not vacuous
    findings = scan_paths(files, root=ROOT, require_safetensors=True)
    assert not findings, "\n".join(map(str, findings))


# ------------------------------------------------------------------------------------------ the weights


def test_shipped_policies_hold_safetensors_only() -> None:
    files = [p for p in (ROOT / "policies").rglob("*") if p.is_file()]
    pickled = [str(p.relative_to(ROOT)) for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
    assert not pickled, pickled
    weights = {p.parent.name for p in files if p.suffix == ".safetensors"}
    assert {"draw", "latent"} <= weights  # both shipped checkpoints were seen


class _Canary:
    """Unpickling this creates ``marker``: proof that a loader ran code from a weight file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.makedirs, (str(self.marker),))


def test_a_checkpoint_with_only_pickled_weights_is_refused_unopened(tmp_path: Path) -> None:
    import pickle

    from sketchmind.models.base import BackendError
    from sketchmind.models.loading import load_policy

    checkpoint = tmp_path / "pickled"
    shutil.copytree(DRAW_POLICY, checkpoint, ignore=shutil.ignore_patterns("*.safetensors"))
    marker = tmp_path / "the-pickle-ran"
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Canary(marker)}))
    with pytest.raises(BackendError) as raised:
        load_policy(str(checkpoint))
    message = str(raised.value)
    assert "\n" not in message and message.startswith("refusing") and "pytorch_model.bin" in message, message
    assert not marker.exists()


# ------------------------------------------------------------------------------------ loopback binding


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None if it has none)."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    hostname = shutil.which("hostname")
    if hostname:
        listed = subprocess.run([hostname, "-I"], capture_output=True, text=True, timeout=10, check=False)
        candidates += listed.stdout.split()
    for address in candidates:
        if ":" in address or address.startswith("127."):
            continue
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))  # really one of ours
            except OSError:
                continue
        return address
    return None


def test_listeners_default_to_loopback() -> None:
    from sketchmind.cli import build_parser
    from sketchmind.server import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    for command in ("serve", "demo"):
        args = build_parser().parse_args([command] + (["--model", "m"] if command == "serve" else []))
        assert args.host == "127.0.0.1", command
    demo = ast.parse((ROOT / "sketchmind" / "demo" / "__init__.py").read_text())
    launch = next(n for n in demo.body if isinstance(n, ast.FunctionDef) and n.name == "launch")
    host = launch.args.args[0]
    assert host.arg == "host" and ast.literal_eval(launch.args.defaults[0]) == "127.0.0.1"
    app = ast.parse((ROOT / "app.py").read_text())
    names = [k.value for n in ast.walk(app) if isinstance(n, ast.Call) for k in n.keywords if k.arg == "server_name"]
    assert all(ast.literal_eval(v) == "127.0.0.1" for v in names)
    # `python app.py` runs `sketchmind demo` (main(["demo", *argv])), whose --host default is checked above.
    runs = [n for n in ast.walk(app) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "main"]
    assert runs and all(isinstance(n.args[0], ast.List) and ast.literal_eval(n.args[0].elts[0]) == "demo" for n in runs)


@pytest.mark.parametrize(
    ("host", "exposed"),
    [
        ("127.0.0.1", False),
        ("127.1.2.3", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.5", True),
        ("example.com", True),
    ],
)
def test_a_non_loopback_bind_warns_in_one_line(host: str, exposed: bool) -> None:
    import io

    from sketchmind.server import warn_if_exposed

    stream = io.StringIO()
    assert warn_if_exposed(host, stream=stream) is exposed
    lines = stream.getvalue().splitlines()
    assert len(lines) == (1 if exposed else 0)
    if exposed:
        assert host in lines[0] and "no authentication" in lines[0]


@pytest.mark.parametrize("share", [False, True])
def test_a_public_demo_link_warns_in_one_line(share: bool) -> None:
    import io

    from sketchmind.demo import warn_if_shared

    stream = io.StringIO()
    assert warn_if_shared(share, stream=stream) is share
    lines = stream.getvalue().splitlines()
    assert len(lines) == int(share) and (not share or "public gradio.live link" in lines[0])


class _Server:
    """``sketchmind serve`` as a real subprocess; stderr goes to a file so it can be read while it runs."""

    def __init__(self, tmp: Path, model: str | None, *extra: str) -> None:
        self.port = free_port()
        self.stderr = tmp / f"stderr-{self.port}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        chosen = ["--model", model] if model is not None else []  # None: the shipped default
        command = [sys.executable, "-m", "sketchmind", "serve", *chosen, "--port", str(self.port), *extra]
        with self.stderr.open("w") as errors:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors, cwd=ROOT)

    def wait_until_up(self, host: str = "127.0.0.1") -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection((host, self.port), timeout=1):
                    return
            except OSError:
                assert self.process.poll() is None, self.stderr.read_text()[-2000:]
                assert time.monotonic() < deadline, "sketchmind serve did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def exposed_address() -> str:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, exposed_address: str) -> Iterator[tuple[_Server, _Server]]:
    """Two servers started together: the shipped policy (no --model) on the default host, a replay on the network."""
    from sketchmind.trace import Step, Trace

    tmp = tmp_path_factory.mktemp("serve")
    replay = Trace(question="q", protocol="sketchmind", model="none", mode="draw")
    replay.add_step(Step(index=1, thought="", calls=[], view_ids=[], errors=[], raw="<answer>1</answer>"))
    replay.save(tmp / "trace")
    default = _Server(tmp, None, "--max-tokens", "8")
    exposed = _Server(tmp, f"replay:{tmp / 'trace'}", "--host", exposed_address)
    try:
        default.wait_until_up()
        exposed.wait_until_up(exposed_address)
        yield default, exposed
    finally:
        default.stop()
        exposed.stop()


def test_serve_by_default_is_reachable_on_loopback_only(servers: tuple[_Server, _Server], exposed_address: str) -> None:
    default, _ = servers
    with urllib.request.urlopen(f"http://127.0.0.1:{default.port}/v1/models", timeout=10) as response:
        assert json.load(response)["data"][0]["id"] == "sketchmind-tiny"  # serve without --model
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((exposed_address, default.port), timeout=5).close()
    # The serve flags reach the server: --max-tokens 8 caps what a request may ask for.
    body = json.dumps({"model": "sketchmind-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
    request = urllib.request.Request(f"http://127.0.0.1:{default.port}/v1/chat/completions", body.encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    error = json.load(refused.value)["error"]
    assert refused.value.code == 400 and "limit of 8" in error["message"]
    assert "warning" not in default.stderr.read_text()


def test_serve_on_a_network_address_warns_once(servers: tuple[_Server, _Server], exposed_address: str) -> None:
    _, exposed = servers
    with urllib.request.urlopen(f"http://{exposed_address}:{exposed.port}/health", timeout=10) as response:
        assert json.load(response) == {"status": "ok"}
    warnings = [line for line in exposed.stderr.read_text().splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and exposed_address in warnings[0] and "no authentication" in warnings[0], warnings
