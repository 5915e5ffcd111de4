"""Faults from outside: a misbehaving backend mid-trace, a bench killed mid-run, a full disk, hostile file names.

Everything is real: an ASGI server on loopback that answers some turns and then stalls, fails or hangs
up; ``OpenAIPolicy`` and the ``Agent`` (and the ``sketchmind`` CLI in a subprocess) against it; SIGKILL
on a real bench process; a real write failure (``RLIMIT_FSIZE``, so writes fail with EFBIG, and
``/dev/full``); real symlinks and ``..`` names.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import Served
from recorded import EXPERT, MAZE

from sketchmind.agent import Agent, Budgets
from sketchmind.canvas import Canvas
from sketchmind.files import (
    SaveError,
    UnsafePathError,
    append_jsonl,
    read_jsonl,
    safe_child,
    write_atomic,
    write_json_atomic,
)
from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling
from sketchmind.models.openai import OpenAIPolicy
from sketchmind.protocols.base import text_part
from sketchmind.trace import TRACE_FILE, VIEWS_DIR, Trace

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# ---------------------------------------------------------------------- a backend that misbehaves on cue

Fault = str  # "ok", "slow", "500", "502", "503", "503-retry-after", "cut-after-headers", "short-body"


class Misbehaving:
    """A raw ASGI OpenAI-compatible endpoint: each POST takes the next fault from ``script``.

    ``ok`` answers the next recorded expert turn (``recorded.EXPERT``, the sketchmind protocol); a fault
    answers nothing useful and does not advance the turns. ``forever`` is used once the script is spent.
    """

    def __init__(self, script: list[Fault], forever: Fault = "ok", stall: float = 3.0) -> None:
        self.script = list(script)
        self.forever = forever
        self.stall = stall
        self.turn = 0
        self.seen: list[Fault] = []  # every POST the server received, by the fault it got

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # read the whole request first, as a real server does
            message = await receive()
            more = message.get("more_body", False)
        fault = self.script.pop(0) if self.script else self.forever
        self.seen.append(fault)
        if fault == "slow":
            await asyncio.sleep(self.stall)  # past the client's per-attempt timeout; it has hung up by then
            return
        if fault in ("500", "502", "503", "503-retry-after"):
            status = int(fault[:3])
            headers = [(b"content-type", b"application/json")]
            if fault == "503-retry-after":
                headers.append((b"retry-after", b"0"))
            body = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode()
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        body = json.dumps(self._completion()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if fault == "cut-after-headers":
            raise ConnectionResetError("hung up after the headers")  # uvicorn closes the socket
        if fault == "short-body":
            await send({"type": "http.response.body", "body": body[: len(body) // 2]})
            raise ConnectionResetError("hung up mid-body")
        self.turn += 1
        await send({"type": "http.response.body", "body": body})

    def _completion(self) -> dict[str, Any]:
        text = EXPERT[min(self.turn, len(EXPERT) - 1)]
        return {
            "id": f"cmpl-{self.turn}",
            "object": "chat.completion",
            "created": 0,
            "model": "flaky",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }


@pytest.fixture
def quiet_uvicorn() -> Iterator[None]:
    import logging

    logger = logging.getLogger("uvicorn.error")  # the hang-ups are on purpose: no tracebacks in the log
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def _policy(url: str, retries: int = 3) -> OpenAIPolicy:
    return OpenAIPolicy("flaky", base_url=url, timeout=30, attempt_timeout=1.0, max_retries=retries, backoff=0.01)


def test_transient_faults_mid_trace_are_retried_and_the_solve_succeeds(quiet_uvicorn: None, tmp_path: Path) -> None:
    # Turn 1 answers; turn 2 meets a 503 and a hang-up after the headers; turn 3 meets a 502 with
    # Retry-After, a half body and a stalled answer before it gets through.
    script = ["ok", "503", "cut-after-headers", "ok", "503-retry-after", "short-body", "slow", "ok"]
    backend = Misbehaving(script)
    with Served(backend) as served:
        policy = _policy(served.url)
        trace = Agent(policy).solve(MAZE, "maze?", save=tmp_path / "run")
    assert trace.status == "answered" and trace.answer == "Action plan: R,U,U,U", trace.error
    assert backend.seen == script and policy.requests_sent == len(script)
    saved = Trace.load(tmp_path / "run")
    assert [s.view_ids for s in saved.steps] == [[2, 3], [4], []]
    assert sorted(p.name for p in (tmp_path / "run" / VIEWS_DIR).iterdir()) == [
        "001.png",
        "002.png",
        "003.png",
        "004.png",
    ]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("500", "{url} answered 500 (overloaded) after 2 retries"),
        ("503-retry-after", "{url} answered 503 (overloaded) after 2 retries"),
        ("slow", "no answer from {url} within 1 s after 2 retries"),
        ("cut-after-headers", "cannot reach {url} ("),
        ("short-body", "cannot reach {url} ("),
    ],
)
def test_persistent_faults_end_the_trace_with_the_backend_error(
    quiet_uvicorn: None, tmp_path: Path, fault: Fault, message: str
) -> None:
    backend = Misbehaving(["ok"], forever=fault, stall=2.0)
    with Served(backend) as served:
        policy = _policy(served.url, retries=2)
        trace = Agent(policy).solve(MAZE, "maze?", save=tmp_path / "run")
        expected = message.format(url=served.url)
    assert trace.status == "error" and trace.error is not None and "\n" not in trace.error
    assert trace.error.startswith(expected) and trace.error.endswith("after 2 retries"), trace.error
    assert backend.seen == ["ok", fault, fault, fault] and policy.requests_sent == 4
    saved = Trace.load(tmp_path / "run")  # the answered turn and its views are kept
    assert saved.status == "error" and saved.error == trace.error
    assert len(saved.steps) == 1 and saved.steps[0].view_ids == [2, 3] and saved.n_images == 3
    assert len(list((tmp_path / "run" / VIEWS_DIR).glob("*.png"))) == 3


def _solve_cli(url: str, save: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sketchmind.cli", "solve", str(MAZE), "maze?"]
    command += ["--model", "openai:flaky", "--base-url", url, "--save", str(save)]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)


def test_cli_solve_retries_a_transient_fault_and_reports_a_persistent_one(quiet_uvicorn: None, tmp_path: Path) -> None:
    flaky = Misbehaving(["ok", "503", "short-body", "ok"])
    with Served(flaky) as served:
        done = _solve_cli(served.url, tmp_path / "ok")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "Action plan: R,U,U,U"
    assert flaky.seen == ["ok", "503", "short-body", "ok", "ok"]
    assert Trace.load(tmp_path / "ok").status == "answered"

    broken = Misbehaving(["ok"], forever="503")
    with Served(broken) as served:
        failed = _solve_cli(served.url, tmp_path / "broken")
        url = served.url
    assert failed.returncode == 3
    errors = [line for line in failed.stderr.splitlines() if line.strip()]
    assert errors == [f"sketchmind: backend error: {url} answered 503 (overloaded) after 3 retries"]
    assert broken.seen == ["ok", "503", "503", "503", "503"]  # the default client: 3 retries
    saved = Trace.load(tmp_path / "broken")
    assert saved.status == "error" and len(saved.steps) == 1 and saved.steps[0].view_ids == [2, 3]
    assert sorted(p.name for p in (tmp_path / "broken" / VIEWS_DIR).iterdir()) == ["001.png", "002.png", "003.png"]


# ---------------------------------------------------------------------- a bench killed mid-run


def test_a_bench_killed_mid_run_resumes_without_redoing_finished_puzzles(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "sketchmind.cli", "bench", "frozenlake", "--model", "expert"]
    command += ["--levels", "3-6", "--n", "40", "--batch-size", "2", "--out", str(out)]
    results = out / "results.jsonl"
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if results.is_file() and results.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the bench finished before it could be killed"
    before = results.read_bytes()
    finished = before[: before.rfind(b"\n") + 1]  # a line cut by the kill was never committed
    done_ids = [json.loads(line)["id"] for line in finished.splitlines()]
    assert 2 <= len(done_ids) < 160

    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = results.read_bytes()
    assert after.startswith(finished), "finished records were rewritten"
    records = [json.loads(line) for line in after.splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 160 and all(r["correct"] for r in records)
    assert f"{160 - len(done_ids)} solved now, 160 in {out}" in " ".join(rerun.stdout.split())


# ---------------------------------------------------------------------- a full disk while saving


_SAVE_WITH_LIMIT = """
import resource, signal, sys
from sketchmind.canvas import Canvas
from sketchmind.trace import Step, Trace
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG instead
canvas = Canvas(sys.argv[2])
canvas.apply("grid", {"rows": 4, "cols": 4})
trace = Trace(question="q" * int(sys.argv[3]), protocol="sketchmind", model="m", steps=[Step(index=1)])
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), int(sys.argv[4])))
trace.save(sys.argv[1], canvas)
"""


def test_a_full_disk_while_saving_a_trace_raises_one_clear_error_and_keeps_the_old_trace(tmp_path: Path) -> None:
    run = tmp_path / "run"
    canvas = Canvas(MAZE)
    old = Trace(question="old", protocol="sketchmind", model="m", answer="A")
    old.save(run, canvas)
    listing = sorted(p.relative_to(run) for p in run.rglob("*"))
    # PNGs under the limit get written, the large trace.json does not: the failure is mid-save.
    saved = subprocess.run(
        [sys.executable, "-c", _SAVE_WITH_LIMIT, str(run), str(MAZE), "200000", "100000"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert saved.returncode != 0
    last = saved.stderr.strip().splitlines()[-1]
    assert last == f"sketchmind.files.SaveError: cannot write {run / TRACE_FILE} (file too large)"
    assert Trace.load(run).question == "old"  # the previous trace.json, whole
    leftovers = [p.name for p in run.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == [], "a temporary file was left behind"
    assert set(listing) <= {p.relative_to(run) for p in run.rglob("*")}


def test_cli_draw_on_a_full_disk_is_one_line_and_exits_3(tmp_path: Path) -> None:
    """Exit 2 means bad input or usage; a full disk is not the user's input."""
    run = tmp_path / "run"
    calls = json.dumps([{"name": "grid", "arguments": {"rows": 4, "cols": 4}}])
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
        "from sketchmind.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [sys.executable, "-c", script, "draw", str(MAZE), calls, "--save", str(run)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"sketchmind: error: cannot write {run}"), done.stderr
    assert errors[0].endswith("(file too large)")
    assert [p for p in run.rglob("*") if p.name.startswith(".")] == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_appending_to_a_full_device_raises_save_error() -> None:
    with pytest.raises(SaveError, match=r"^cannot append to /dev/full \(no space left on device\)$"):
        append_jsonl("/dev/full", [{"a": 1}])


def test_atomic_writes_replace_whole_files_and_jsonl_drops_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2, "ü": "ü"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 2, "ü": "ü"}
    with pytest.raises(SaveError, match="cannot write"):
        write_atomic(tmp_path / "missing" / "x.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    lines = tmp_path / "m.jsonl"
    lines.write_text('{"step": 1}\n{"step": 2}\n{"st')  # a writer killed mid-line
    assert read_jsonl(lines) == [{"step": 1}, {"step": 2}]
    append_jsonl(lines, [{"step": 3}])
    assert lines.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'


# ---------------------------------------------------------------------- names that try to leave their folder


@pytest.mark.parametrize(
    "name", ["../escape.png", "a/../../escape.png", "/etc/passwd", "views/\x00.png", "", "..", "a\\..\\..\\x"]
)
def test_hostile_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_child(tmp_path, name)


def test_symlinks_out_of_the_folder_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "file.png").symlink_to(outside / "file.png")
    for name in ("link/x.png", "file.png", "link"):
        with pytest.raises(UnsafePathError, match="symlink"):
            safe_child(root, name)
    assert safe_child(root, "views/001.png") == root.resolve() / "views" / "001.png"
    (root / "inner").symlink_to(root / "views", target_is_directory=True)
    assert safe_child(root, "inner/x.png").name == "x.png"  # a link that stays inside is fine


def test_an_unreachable_server_keeps_the_cause_of_its_backend_error() -> None:
    from loopback import free_port

    policy = OpenAIPolicy("x", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5, max_retries=0)
    with pytest.raises(BackendError, match="cannot reach") as failure:
        policy.generate(Conversation(id="c", messages=[{"role": "user", "content": [text_part("hi")]}]))
    assert failure.value.__cause__ is not None  # what SKETCHMIND_DEBUG=1 shows


class HangsOnce(Policy):
    """The first call hangs until released; every later call answers at once."""

    name = "hangs-once"

    def __init__(self) -> None:
        self.unblock = threading.Event()
        self.calls = 0

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self.calls += 1
        if self.calls == 1:
            self.unblock.wait(60)
        return Generation(text="<answer>done</answer>")


def test_a_hung_model_call_does_not_block_the_next_call_on_the_same_agent() -> None:
    policy = HangsOnce()
    agent = Agent(policy, budgets=Budgets(timeout=0.2))
    try:
        hung = agent.solve(None, "first")
        assert hung.status == "error" and "did not answer within 0.2 s" in (hung.error or "")
        started = time.monotonic()
        answered = agent.solve(None, "second")  # the first call is still hanging in its thread
        assert answered.status == "answered" and answered.answer == "done", answered.error
        assert time.monotonic() - started < 1.0
    finally:
        policy.unblock.set()
