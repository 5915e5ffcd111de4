"""Load test of ``sketchmind serve``: concurrent clients against a real server process, and its memory over time.

Starts ``sketchmind serve`` as a subprocess on loopback (the shipped tiny draw policy, or a tiny random
Qwen2.5-VL when this install has none), runs N client threads that each send realistic chat requests for a
fixed time, and samples the server's RSS from ``/proc/PID/status`` every 0.5 s. Every request is an agent's
first turn on a different puzzle: the sketchmind system prompt with the tool specs (the same for all, as
real clients share it), then that puzzle's image and question, from a pool of ``POOL`` generated
frozen-lake and maze puzzles of several levels and sizes. Client ``c``'s ``k``-th request asks puzzle
``(c + k * clients) % POOL``: deterministic, never the same as another client's concurrent request, and
repeated only after ``POOL`` requests, when the server no longer holds the earlier one's session (so the
server's exact-message reuse never fires; its shared-prefix reuse of the system prompt does, as it would
for real clients, in the baseline too). Reports requests served, throughput, latency
percentiles, errors by kind, RSS start/end/max and the RSS growth from the first to the last quarter of
the run after warm-up, with a "no growth" verdict within a tolerance, and how the server batched the requests
(``GET /stats``). Unless ``--no-baseline``, the largest client count runs once more against a server that
answers one request at a time (``--max-batch 1``), and the throughput ratio of batching over that
baseline is printed beside both p99 latencies (issue 18's target: at least 3x at 16 clients).

    nice -n 19 .venv/bin/python tools/load_serve.py --clients 4 16 --seconds 60
    .venv/bin/python tools/load_serve.py --clients 2 --seconds 5 --json

``run_load(clients, seconds, ...)`` returns a ``LoadReport`` for benchmark suites.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# An agent's turn budget (``sketchmind solve --max-new-tokens``): each request stops where the policy ends its
# turn (100-250 tokens for the shipped one's first turn), as real agent traffic does. A 16-token cap measured
# only prefills, which batching cannot shorten on a CPU (same work, one call).
MAX_TOKENS = 512
POOL = 64  # distinct puzzles the clients cycle through (the server keeps 8 recent sessions)
POOL_FAMILIES = (("frozenlake", (3, 4, 5, 6)), ("maze", (1, 2, 3, 4)))  # levels of each, interleaved
SAMPLE_EVERY = 0.5  # seconds between RSS samples
BLOCK = "bench:load"  # the block --write rewrites
PAGE = "docs/reliability.md"  # the docs page that holds it (``make load`` writes there)


@dataclass
class LoadReport:
    """What one load run measured. Latencies in seconds, memory in MiB."""

    clients: int
    seconds: float  # measured duration (clients started to last request done)
    model: str
    max_tokens: int
    requests: int  # answered with 200
    errors: dict[str, int]  # by kind: "http_413", "ReadTimeout", "bad_response"...
    throughput: float  # requests per second
    latency_p50: float
    latency_p95: float
    latency_p99: float
    latency_mean: float
    rss_start_mb: float  # at the first sample after warm-up
    rss_end_mb: float
    rss_max_mb: float
    rss_first_quarter_mb: float  # mean of the samples in the first quarter after warm-up
    rss_last_quarter_mb: float
    rss_growth_mb: float  # last quarter minus first quarter
    rss_tolerance_mb: float
    no_growth: bool  # rss_growth_mb <= rss_tolerance_mb
    rss_samples: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (seconds, MiB), whole run
    max_batch: int | None = None  # the server's --max-batch (None: its default)
    prompt_tokens_mean: float = 0.0  # usage.prompt_tokens per answered request: tokens prefilled, not cached
    distinct_requests: int = 0  # distinct request bodies the clients cycled through
    cpu_seconds: float = 0.0  # the server's CPU time over the measured run (user + system, all threads)
    load_average: float = 0.0  # the machine's 1-minute load average, mean of the run's start and end

    @property
    def per_cpu_second(self) -> float:
        """Requests answered per second of server CPU time: less sensitive than req/s to other work on the
        machine, which slows the server's wall clock but not its CPU time per request."""
        return self.requests / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    batching: dict[str, float] = field(default_factory=dict)  # GET /stats over the measured run (warm-up excluded)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        total = self.requests + self.error_count
        return self.error_count / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived error fields."""
        return {**asdict(self), "error_count": self.error_count, "error_rate": self.error_rate}


# ------------------------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_model(scratch: Path) -> str:
    """The shipped tiny draw policy, else a tiny random Qwen2.5-VL saved under ``scratch``."""
    from sketchmind.models.default import shipped_policy

    shipped = shipped_policy("draw")
    if shipped is not None:
        return str(shipped)
    from sketchmind.models.tiny import build_tiny

    return str(build_tiny("qwen2.5-vl", scratch / "tiny"))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) that ``pid`` has used so far, or 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0.0


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (VmRSS), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def serving(
    model: str, scratch: Path, startup_timeout: float = 300.0, max_batch: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``sketchmind serve`` on a free loopback port until the block ends: the process and its /v1 URL."""
    port = _free_port()
    log = scratch / f"serve-{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "sketchmind", "serve", "--model", model, "--name", "load", "--port", str(port)]
    if max_batch is not None:
        command += ["--max-batch", str(max_batch)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"sketchmind serve did not start (exit {process.poll()}): {tail}")
            time.sleep(0.2)
        yield process, f"{url}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


# ------------------------------------------------------------------------------------------ the clients


def puzzles(count: int, seed: int = 0) -> list[Any]:
    """``count`` generated puzzles (``sketchmind.tasks``), the families and levels of ``POOL_FAMILIES`` in turn."""
    from sketchmind.tasks import get_family, puzzle_rng

    kinds = [(name, level) for name, levels in POOL_FAMILIES for level in levels]
    out = []
    for i in range(count):
        name, level = kinds[i % len(kinds)]
        family, index = get_family(name), i // len(kinds)
        out.append(family.generate(puzzle_rng(family.name, seed, level, index), level, index))
    return out


def chat_request(max_tokens: int, puzzle: Any) -> dict[str, Any]:
    """What an agent's first turn on ``puzzle`` sends: the sketchmind system prompt with the tool specs (as
    ``Agent`` writes it), then the puzzle's image and question."""
    import cv2

    from sketchmind.protocols import get_protocol
    from sketchmind.tools import specs

    pixels = puzzle.image
    png = cv2.imencode(".png", np.ascontiguousarray(pixels[:, :, ::-1]))[1].tobytes()  # RGB -> OpenCV's BGR
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    protocol = get_protocol("sketchmind")
    size = (int(pixels.shape[1]), int(pixels.shape[0]))
    content: list[dict[str, Any]] = []
    for part in protocol.first_message(puzzle.question, has_image=True)["content"]:
        if part.get("type") == "image":
            content.append({"type": "image_url", "image_url": {"url": url}})
        else:
            content.append({"type": "text", "text": part["text"]})
    return {
        "model": "load",
        "messages": [
            {"role": "system", "content": protocol.system_prompt(specs(), image_size=size)},
            {"role": "user", "content": content},
        ],
        "max_tokens": max_tokens,
        "temperature": 0.7,
    }


def request_pool(max_tokens: int, count: int = POOL) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``count`` distinct request bodies for the clients, and one more (another puzzle) for the warm-up."""
    bodies = [chat_request(max_tokens, puzzle) for puzzle in puzzles(count + 1)]
    return bodies[:count], bodies[count]


def pick(pool: Sequence[dict[str, Any]], clients: int, client: int, request: int) -> dict[str, Any]:
    """Client ``client``'s ``request``-th body: ``(client + request * clients) % len(pool)``."""
    return pool[(client + request * clients) % len(pool)]


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    prompt_tokens: list[int] = field(default_factory=list)  # usage.prompt_tokens: what the server prefilled
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(
    url: str, pool: Sequence[dict[str, Any]], clients: int, index: int, until: float, tally: _Tally, timeout: float
) -> None:
    """Client ``index``: requests from ``pool`` (see ``pick``) until ``until``, one at a time, on one connection."""
    with httpx.Client(base_url=url, timeout=timeout) as client:
        sent = 0
        while time.monotonic() < until:
            body = pick(pool, clients, index, sent)
            sent += 1
            started = time.perf_counter()
            kind: str | None = None
            prompt = 0
            try:
                response = client.post("/chat/completions", json=body)
                if response.status_code != 200:
                    kind = f"http_{response.status_code}"
                else:
                    reply = response.json()
                    if not reply.get("choices"):
                        kind = "bad_response"
                    prompt = int((reply.get("usage") or {}).get("prompt_tokens") or 0)
            except httpx.HTTPError as error:
                kind = type(error).__name__
            except ValueError:  # the body was not JSON
                kind = "bad_response"
            elapsed = time.perf_counter() - started
            with tally.lock:
                if kind is None:
                    tally.latencies.append(elapsed)
                    tally.prompt_tokens.append(prompt)
                else:
                    tally.errors[kind] += 1


def _sampler(pid: int, stop: threading.Event, samples: list[tuple[float, float]], origin: float) -> None:
    while not stop.is_set():
        value = rss_mb(pid)
        if value is not None:
            samples.append((time.monotonic() - origin, value))
        stop.wait(SAMPLE_EVERY)


# ------------------------------------------------------------------------------------------------- run


def batch_stats(url: str) -> dict[str, float]:
    """The server's batching counters (``GET /stats``; ``url`` ends in /v1)."""
    response = httpx.get(url.removesuffix("/v1") + "/stats", timeout=10.0)
    response.raise_for_status()
    stats: dict[str, float] = response.json()["batching"]
    return stats


def _stats_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Batches, requests and rows counted between two ``batch_stats`` reads, requests per batch and, from a
    continuously batching server (which also counts decode steps), rows per decode step."""
    keys = ("batches", "requests", "rows", "batched_calls", "retried", "steps", "row_steps", "joined")
    delta = {key: after[key] - before[key] for key in keys if key in after and key in before}
    delta["mean_requests"] = delta["requests"] / delta["batches"] if delta["batches"] else 0.0
    if delta.get("steps"):
        delta["mean_rows"] = delta["row_steps"] / delta["steps"]
    delta["largest"] = after["largest"]  # since the server started: the warm-up request ran alone
    return delta


def _quarters(values: Sequence[float]) -> tuple[float, float]:
    """Means of the first and last quarter (at least one sample each)."""
    size = max(1, len(values) // 4)
    return statistics.fmean(values[:size]), statistics.fmean(values[-size:])


def run_load(
    clients: int,
    seconds: float,
    *,
    model: str | None = None,
    max_tokens: int = MAX_TOKENS,
    warmup: float | None = None,
    tolerance_mb: float | None = None,
    request_timeout: float = 120.0,
    scratch: Path | None = None,
    max_batch: int | None = None,
) -> LoadReport:
    """Serve ``model`` in a subprocess and drive it with ``clients`` threads for ``seconds``.

    ``max_batch`` is passed to ``sketchmind serve --max-batch`` (1: one request at a time; None: its default).

    ``warmup`` (default: a fifth of the run, at most 10 s) is left out of the RSS trend: allocator pools and
    caches fill then. ``tolerance_mb`` (default: 16 MiB or 5% of the post-warm-up RSS, the larger) is how
    much the last quarter's mean RSS may exceed the first quarter's for a "no growth" verdict.
    """
    if clients < 1 or seconds <= 0:
        raise ValueError("clients must be >= 1 and seconds > 0")
    warm = min(10.0, seconds / 5) if warmup is None else warmup
    with contextlib.ExitStack() as stack:
        if scratch is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-serve-")))
        chosen = model or default_model(scratch)
        process, url = stack.enter_context(serving(chosen, scratch, max_batch=max_batch))
        pool, warm_body = request_pool(max_tokens)
        with httpx.Client(base_url=url, timeout=request_timeout) as client:  # first request: lazy imports, caches
            client.post("/chat/completions", json=warm_body).raise_for_status()
        before = batch_stats(url)
        cpu_before, load_before = cpu_seconds(process.pid), os.getloadavg()[0]
        tally, samples, stop = _Tally(), [], threading.Event()
        origin = time.monotonic()
        sampler = threading.Thread(target=_sampler, args=(process.pid, stop, samples, origin), daemon=True)
        sampler.start()
        until = origin + seconds
        threads = [
            threading.Thread(
                target=_client, args=(url, pool, clients, index, until, tally, request_timeout), daemon=True
            )
            for index in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - origin
        cpu, load = cpu_seconds(process.pid) - cpu_before, (load_before + os.getloadavg()[0]) / 2
        stop.set()
        sampler.join()
        batching = _stats_since(before, batch_stats(url))
    report = _report(clients, elapsed, chosen, max_tokens, tally, samples, warm, tolerance_mb)
    report.max_batch, report.batching = max_batch, batching
    report.prompt_tokens_mean = statistics.fmean(tally.prompt_tokens) if tally.prompt_tokens else 0.0
    report.distinct_requests = len(pool)
    report.cpu_seconds, report.load_average = cpu, load
    return report


def _report(
    clients: int,
    elapsed: float,
    model: str,
    max_tokens: int,
    tally: _Tally,
    samples: list[tuple[float, float]],
    warm: float,
    tolerance_mb: float | None,
) -> LoadReport:
    latencies = np.asarray(tally.latencies, dtype=np.float64)
    p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99)) if latencies.size else (0.0,) * 3
    steady = [mb for t, mb in samples if t >= warm] or [mb for _, mb in samples] or [0.0]
    first, last = _quarters(steady)
    tolerance = tolerance_mb if tolerance_mb is not None else max(16.0, 0.05 * steady[0])
    return LoadReport(
        clients=clients,
        seconds=elapsed,
        model=model,
        max_tokens=max_tokens,
        requests=int(latencies.size),
        errors=dict(tally.errors),
        throughput=latencies.size / elapsed if elapsed > 0 else 0.0,
        latency_p50=p50,
        latency_p95=p95,
        latency_p99=p99,
        latency_mean=float(latencies.mean()) if latencies.size else 0.0,
        rss_start_mb=steady[0],
        rss_end_mb=steady[-1],
        rss_max_mb=max(mb for _, mb in samples) if samples else 0.0,
        rss_first_quarter_mb=first,
        rss_last_quarter_mb=last,
        rss_growth_mb=last - first,
        rss_tolerance_mb=tolerance,
        no_growth=last - first <= tolerance,
        rss_samples=samples,
    )


# ----------------------------------------------------------------------------------------------- output

COLUMNS = (
    ("clients", "{:d}"),
    ("requests", "{:d}"),
    ("req/s", "{:.2f}"),
    ("p50 ms", "{:.0f}"),
    ("p95 ms", "{:.0f}"),
    ("p99 ms", "{:.0f}"),
    ("errors", "{}"),
    ("RSS over time MiB", "{}"),
    ("RSS growth MiB", "{}"),
)


def rss_over_time(samples: Sequence[tuple[float, float]], points: int = 5) -> list[float]:
    """The RSS at ``points`` evenly spaced moments of the run, first and last sample included."""
    if not samples:
        return []
    last = len(samples) - 1
    return [samples[round(i * last / (points - 1))][1] for i in range(points)] if last else [samples[0][1]]


def table_rows(reports: Sequence[LoadReport]) -> list[list[str]]:
    """One row of formatted cells per report, in ``COLUMNS`` order."""
    rows = []
    for r in reports:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items())) or "0"
        verdict = "no growth" if r.no_growth else "GROWS"
        values: list[Any] = [
            r.clients,
            r.requests,
            r.throughput,
            r.latency_p50 * 1000,
            r.latency_p95 * 1000,
            r.latency_p99 * 1000,
            f"{errors} ({r.error_rate:.1%})",
            " → ".join(f"{mb:.0f}" for mb in rss_over_time(r.rss_samples)) + f" (max {r.rss_max_mb:.0f})",
            f"{r.rss_growth_mb:+.1f} (tol {r.rss_tolerance_mb:.0f}): {verdict}",
        ]
        rows.append([fmt.format(v) for (_, fmt), v in zip(COLUMNS, values, strict=True)])
    return rows


def markdown(reports: Sequence[LoadReport]) -> str:
    """The reports as a Markdown table."""
    header = [name for name, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(reports)]
    return "\n".join(lines)


RATIO_TARGET = 3.0  # issue 18: throughput at 16 clients, batched over one at a time


def comparison(batched: LoadReport, alone: LoadReport) -> dict[str, Any]:
    """Batched against one-at-a-time serving at the same client count: the throughput ratio and both p99s."""
    ratio = batched.throughput / alone.throughput if alone.throughput else float("inf")
    return {
        "clients": batched.clients,
        "throughput_batched": batched.throughput,
        "throughput_one_at_a_time": alone.throughput,
        "ratio": ratio,
        "target": RATIO_TARGET,
        "met": ratio >= RATIO_TARGET,
        "p99_batched": batched.latency_p99,
        "p99_one_at_a_time": alone.latency_p99,
        "mean_batch": batched.batching.get("mean_requests", 0.0),
        "mean_rows": batched.batching.get("mean_rows"),  # rows per decode step (continuous batching only)
        "distinct_requests": batched.distinct_requests,
        "prompt_tokens_batched": batched.prompt_tokens_mean,
        "prompt_tokens_one_at_a_time": alone.prompt_tokens_mean,
        "per_cpu_second_batched": batched.per_cpu_second,
        "per_cpu_second_one_at_a_time": alone.per_cpu_second,
        "ratio_cpu": batched.per_cpu_second / alone.per_cpu_second if alone.per_cpu_second else float("inf"),
        "load_batched": batched.load_average,
        "load_one_at_a_time": alone.load_average,
    }


def comparison_line(c: dict[str, Any]) -> str:
    """``comparison`` in one line."""
    verdict = "met" if c["met"] else "MISSED"
    return (
        f"batching at {c['clients']} clients: {c['throughput_batched']:.2f} req/s vs "
        f"{c['throughput_one_at_a_time']:.2f} req/s one at a time = {c['ratio']:.2f}x "
        f"(target >= {c['target']:g}x: {verdict}); p99 latency "
        f"{c['p99_batched'] * 1000:.0f} ms batched vs {c['p99_one_at_a_time'] * 1000:.0f} ms one at a time; "
        f"{c['mean_batch']:.1f} requests per batch"
        + (f" ({c['mean_rows']:.1f} rows per decode step)" if c.get("mean_rows") else "")
        + f"; {c.get('distinct_requests', 0)} distinct requests, "
        f"{c.get('prompt_tokens_batched', 0.0):.0f} vs {c.get('prompt_tokens_one_at_a_time', 0.0):.0f} "
        "prompt tokens prefilled per request; per server CPU second "
        f"{c.get('per_cpu_second_batched', 0.0):.2f} vs {c.get('per_cpu_second_one_at_a_time', 0.0):.2f} requests "
        f"= {c.get('ratio_cpu', 0.0):.2f}x; machine load average {c.get('load_batched', 0.0):.1f} vs "
        f"{c.get('load_one_at_a_time', 0.0):.1f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, nargs="+", default=[4], help="concurrent clients (one run each)")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each run")
    parser.add_argument("--model", help="checkpoint to serve (default: the shipped tiny draw policy)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="max_tokens of every request")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON lines instead of tables")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the largest client count once more, one request at a time, and print the batching ratio",
    )
    parser.add_argument("--write", type=Path, metavar="PAGE", help="replace the load table in this file")
    args = parser.parse_args(argv)
    reports = []
    for clients in args.clients:
        report = run_load(clients, args.seconds, model=args.model, max_tokens=args.max_tokens)
        reports.append(report)
        if args.json:
            print(json.dumps({k: v for k, v in report.as_dict().items() if k != "rss_samples"}), flush=True)
    baseline, compared = None, {}
    if args.baseline:  # the same load on a server that answers one request at a time (as before batching)
        batched = max(reports, key=lambda r: r.clients)
        baseline = run_load(batched.clients, args.seconds, model=args.model, max_tokens=args.max_tokens, max_batch=1)
        compared = comparison(batched, baseline)
        if args.json:
            print(json.dumps({"comparison": compared}), flush=True)
    if not args.json:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"sketchmind serve under load ({args.seconds:g} s per run, max_tokens {args.max_tokens})")
        for name, _ in COLUMNS:
            table.add_column(name, justify="right")
        for row in table_rows(reports):
            table.add_row(*row)
        Console(width=None if sys.stdout.isatty() else 160).print(table)
        print()
        print(markdown(reports))
        if baseline is not None:
            print(f"\none at a time (--max-batch 1), for the ratio:\n{markdown([baseline])}\n")
            print(comparison_line(compared))
    if args.write:
        from sketchmind.files import replace_marked_block

        note = (
            f"`sketchmind serve` ({Path(reports[0].model).name} policy) on loopback, {args.seconds:g} s per run, "
            f"max_tokens {args.max_tokens}, {reports[0].distinct_requests} distinct requests cycled; "
            f"{time.strftime('%Y-%m-%d')}."
        )
        if baseline is not None:
            note += (
                f"\n\nThe same {baseline.clients} clients against a server that answers one request at a time "
                f"(`--max-batch 1`), for the ratio:\n\n{markdown([baseline])}\n\n{comparison_line(compared)}."
            )
        if not replace_marked_block(args.write, BLOCK, f"{markdown(reports)}\n\n{note}"):
            raise SystemExit(f"{args.write}: no <!-- {BLOCK} --> block to replace")
    checked = [*reports, *([baseline] if baseline else [])]
    return 0 if all(r.error_count == 0 and r.no_growth for r in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
