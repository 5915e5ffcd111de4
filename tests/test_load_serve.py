"""``tools/load_serve.py`` end to end, briefly: a real ``sketchmind serve`` process, 2 clients for ~3 s.

Only the report's structure is checked (requests served, no errors, RSS sampled, percentiles ordered):
timings on a shared test machine say nothing, so there are no thresholds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("load_serve", ROOT / "tools" / "load_serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_serve"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


load_serve = _load_tool()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> object:
    return load_serve.run_load(2, 3.0, max_tokens=4, warmup=0.5, scratch=tmp_path_factory.mktemp("load"))


def test_a_short_load_run_serves_every_request(report: object) -> None:
    assert isinstance(report, load_serve.LoadReport)
    assert report.clients == 2 and report.max_tokens == 4 and report.seconds >= 3.0
    assert report.requests > 0 and report.errors == {} and report.error_rate == 0.0
    assert report.throughput > 0
    assert 0 < report.latency_p50 <= report.latency_p95 <= report.latency_p99
    assert Path(report.model).name == "draw"  # the shipped policy was served


def test_the_server_memory_was_sampled(report: object) -> None:
    assert isinstance(report, load_serve.LoadReport)
    assert len(report.rss_samples) >= 4  # every 0.5 s over >= 3 s
    times = [t for t, _ in report.rss_samples]
    assert times == sorted(times) and all(mb > 0 for _, mb in report.rss_samples)
    assert 0 < report.rss_start_mb <= report.rss_max_mb and report.rss_end_mb <= report.rss_max_mb
    assert report.rss_growth_mb == pytest.approx(report.rss_last_quarter_mb - report.rss_first_quarter_mb)
    assert report.no_growth == (report.rss_growth_mb <= report.rss_tolerance_mb)


def test_the_report_renders_as_json_and_markdown(report: object) -> None:
    assert isinstance(report, load_serve.LoadReport)
    record = json.loads(json.dumps(report.as_dict()))
    assert record["requests"] == report.requests and record["error_count"] == 0
    table = load_serve.markdown([report]).splitlines()
    assert len(table) == 3 and table[0].startswith("| clients |") and table[2].startswith("| 2 | ")


def test_growth_verdict_uses_the_quarters() -> None:
    """The trend logic on a known series: flat passes, a steady climb fails."""
    tally = load_serve._Tally(latencies=[0.1, 0.2, 0.3])
    flat = [(t * 0.5, 500.0) for t in range(40)]
    climb = [(t * 0.5, 500.0 + 10 * t) for t in range(40)]
    assert load_serve._report(1, 20.0, "m", 4, tally, flat, 1.0, 8.0).no_growth
    grown = load_serve._report(1, 20.0, "m", 4, tally, climb, 1.0, 8.0)
    assert not grown.no_growth and grown.rss_growth_mb > 8.0


def test_memory_over_time_reads_evenly_spaced_samples() -> None:
    samples = [(i * 0.5, 900.0 + i) for i in range(21)]
    assert load_serve.rss_over_time(samples) == [900.0, 905.0, 910.0, 915.0, 920.0]
    assert load_serve.rss_over_time([(0.0, 5.0)]) == [5.0] and load_serve.rss_over_time([]) == []


def test_the_report_counts_how_the_server_batched(report: object) -> None:
    assert isinstance(report, load_serve.LoadReport)
    batching = report.batching
    assert batching["requests"] == report.requests  # every measured request went through the batcher
    assert 1 <= batching["batches"] <= batching["requests"] and batching["retried"] == 0
    assert 1.0 <= batching["mean_requests"] <= 2.0  # two clients: at most two requests wait together


def test_the_comparison_is_the_throughput_ratio_beside_both_p99s() -> None:
    tally = load_serve._Tally(latencies=[0.1] * 9 + [0.5])
    batched = load_serve._report(16, 1.0, "m", 4, tally, [], 0.0, 8.0)
    alone = load_serve._report(16, 4.0, "m", 4, tally, [], 0.0, 8.0)
    batched.batching = {"mean_requests": 12.5}
    compared = load_serve.comparison(batched, alone)
    assert compared["ratio"] == pytest.approx(4.0) and compared["met"] and compared["clients"] == 16
    assert compared["p99_batched"] == batched.latency_p99 and compared["p99_one_at_a_time"] == alone.latency_p99
    line = load_serve.comparison_line(compared)
    assert "= 4.00x (target >= 3x: met)" in line and "12.5 requests per batch" in line and "p99" in line
    assert not load_serve.comparison(alone, batched)["met"]


def test_the_clients_send_distinct_agent_first_turns_that_share_the_system_prompt() -> None:
    """Real clients send different prompts: every body in the pool is another puzzle (image and question), all
    with the same system prompt (tool specs); concurrent requests never repeat one another; the pool is fixed."""
    pool, warm = load_serve.request_pool(8, count=12)
    encoded = [json.dumps(body, sort_keys=True) for body in [*pool, warm]]
    assert len(set(encoded)) == 13  # the warm-up asks a puzzle of its own
    assert len({body["messages"][1]["content"][1]["text"] for body in pool}) > 1  # different questions
    assert len({body["messages"][1]["content"][0]["image_url"]["url"] for body in pool}) == 12  # and images
    assert len({body["messages"][0]["content"] for body in pool}) == 1  # one system prompt, with the tools
    assert '"name"' in pool[0]["messages"][0]["content"] or "draw" in pool[0]["messages"][0]["content"]
    assert [json.dumps(b, sort_keys=True) for b in load_serve.request_pool(8, count=12)[0]] == encoded[:12]
    for clients in (4, 5):
        for request in range(3):  # one round: each client asks another puzzle
            round_ = [load_serve.pick(pool, clients, c, request) for c in range(clients)]
            assert len({id(body) for body in round_}) == clients


def test_the_report_counts_the_prompt_tokens_prefilled(report: object) -> None:
    assert isinstance(report, load_serve.LoadReport)
    assert report.distinct_requests == load_serve.POOL and report.prompt_tokens_mean > 1
    assert report.cpu_seconds > 0 and report.per_cpu_second == report.requests / report.cpu_seconds
    assert report.load_average >= 0
