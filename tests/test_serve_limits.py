"""``sketchmind serve`` bounds every request, over real loopback HTTP: body bytes, messages, images, pixels,
text and ``max_tokens``. Each refusal is one line in OpenAI's error shape, and the policy never sees it.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest
from loopback import Recording, Served
from PIL import Image

from sketchmind.models.replay import ReplayPolicy
from sketchmind.server import Limits, create_app

SMALL = Limits(
    max_body_bytes=64_000,
    max_messages=4,
    max_images=2,
    max_image_pixels=2_500,
    max_total_pixels=4_000,
    max_text_chars=1_000,
    max_tokens=32,
)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def claimed_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: decoding it would be a bomb; the header is enough."""
    data = bytearray(png(1, 1))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def image_part(data: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}


def request(*parts: dict[str, Any] | str, **extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Served, Recording]]:
    policy = Recording(ReplayPolicy(["<answer>1</answer>"]))
    with Served(create_app(policy, "m", limits=SMALL)) as server:
        yield server, policy


def post(port: int, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", "/v1/chat/completions", body, {"content-type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def refused(status: int, answer: dict[str, Any], expected: int, code: str | None, fragment: str) -> None:
    """One line in OpenAI's error shape."""
    assert status == expected, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["code"] == code and fragment in error["message"] and "\n" not in error["message"], error
    assert len(error["message"]) < 300


def test_a_request_within_every_limit_is_served(served: tuple[Served, Recording]) -> None:
    server, policy = served
    before = len(policy.seen)
    body = request(image_part(png(40, 40)), image_part(png(40, 40)), "x" * 900, max_tokens=32)
    status, answer = post(server.port, json.dumps(body).encode())
    assert status == 200 and answer["choices"][0]["message"]["content"] == "<answer>1</answer>"
    assert policy.images_per_request[before:] == [2]


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        (
            {"model": "m", "messages": [{"role": "user", "content": "hi"}] * 5},
            413,
            "too_many_messages",
            "over the limit of 4",
        ),
        (request(*[image_part(png(10, 10))] * 3), 413, "too_many_images", "over the limit of 2 images"),
        (request(image_part(png(60, 50))), 413, "image_too_large", "60x50, over the limit of 2500 pixels"),
        (request(image_part(png(45, 45)), image_part(png(45, 45))), 413, "image_too_large", "4000 pixels in all"),
        (request(image_part(claimed_png(100_000, 100_000))), 413, "image_too_large", "100000x100000"),
        (request("x" * 1_001), 413, "text_too_long", "over 1000 characters"),
        (request("x" * 600, "y" * 600), 413, "text_too_long", "content[1]"),
        (request("hi", tools=[{"type": "function", "function": {"name": "x" * 2000}}]), 413, "text_too_long", "tools"),
        (request("hi", max_tokens=33), 400, None, "over this server's limit of 32"),
        (request("hi", max_completion_tokens=10**9), 400, None, "over this server's limit of 32"),
    ],
    ids=[
        "messages",
        "images",
        "pixels",
        "total-pixels",
        "header-bomb",
        "text",
        "text-sum",
        "tools",
        "tokens",
        "tokens2",
    ],
)
def test_each_limit_refuses_in_one_line(
    served: tuple[Served, Recording], body: dict[str, Any], status: int, code: str | None, fragment: str
) -> None:
    server, policy = served
    before = len(policy.seen)
    refused(*post(server.port, json.dumps(body).encode()), status, code, fragment)
    assert len(policy.seen) == before  # refused before the model was asked


def test_tool_call_arguments_count_as_text(served: tuple[Served, Recording]) -> None:
    server, _ = served
    call = {"id": "c", "type": "function", "function": {"name": "box", "arguments": json.dumps({"label": "x" * 2000})}}
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}],
    }
    refused(*post(server.port, json.dumps(body).encode()), 413, "text_too_long", "messages[1].tool_calls")


def test_a_declared_oversized_body_is_refused_before_it_is_sent(served: tuple[Served, Recording]) -> None:
    """Content-Length says 10 MB; only 2 bytes follow. The 413 comes back anyway: nothing waited for the rest."""
    server, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/chat/completions")
        connection.putheader("content-type", "application/json")
        connection.putheader("content-length", str(10_000_000))
        connection.endheaders(message_body=b"{}")
        response = connection.getresponse()
        refused(response.status, json.loads(response.read()), 413, "body_too_large", "10000000 bytes")
    finally:
        connection.close()


def test_a_chunked_body_is_cut_off_at_the_limit(served: tuple[Served, Recording]) -> None:
    """A chunked body (no Content-Length) is counted as it streams; the last chunk never needs to arrive."""
    server, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/chat/completions")
        connection.putheader("content-type", "application/json")
        connection.putheader("transfer-encoding", "chunked")
        connection.endheaders()
        chunk = b" " * 16_000
        for _ in range(SMALL.max_body_bytes // len(chunk) + 1):  # just over the limit, and no terminating chunk
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        response = connection.getresponse()
        refused(response.status, json.loads(response.read()), 413, "body_too_large", "over the limit of 64000 bytes")
    finally:
        connection.close()


def test_the_server_keeps_serving_after_refusals(served: tuple[Served, Recording]) -> None:
    server, _ = served
    refused(*post(server.port, b"x" * 70_000), 413, "body_too_large", "70000 bytes")
    status, _ = post(server.port, json.dumps(request("hi")).encode())
    assert status == 200


def test_a_10mb_label_is_refused_by_the_default_limits() -> None:
    """With no limits given: a 10 MB text (under the 32 MB body limit) is over the text limit."""
    policy = Recording(ReplayPolicy(["<answer>1</answer>"]))
    with Served(create_app(policy, "m")) as server:
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 10_000_000}])
        assert raised.value.status_code == 413 and "over 1000000 characters" in raised.value.message
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "label it"}])
        assert answer.choices[0].message.content == "<answer>1</answer>" and len(policy.seen) == 1


def test_limits_must_be_positive_and_serve_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    from sketchmind.cli import build_parser

    with pytest.raises(ValueError, match="max_images must be a positive integer"):
        Limits(max_images=0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for name, default in vars(Limits()).items():
        flag = "--" + name.replace("_", "-")
        assert flag in usage and f"(default {default})" in usage, name
    args = build_parser().parse_args(["serve", "--model", "m", "--max-images", "3"])
    assert args.max_images == 3 and args.max_tokens is None  # None: Limits' own default applies
