"""A fake OpenAI-compatible chat completions server for tests, on a free loopback port.

It answers `POST /v1/chat/completions` with scripted replies, per attempt (the
`X-Lesson-Ledger-Attempt` header, `<lesson_id>/<attempt>`) or by default, and records
every call, so that tests can count calls per attempt, look at the prompts, and wait for
calls to be in flight. Replies can be slow (a fixed latency), held until a test releases
them, or held until a number of calls are in flight at once (a barrier, to show
concurrency); a 429 can carry Retry-After. Each answer reports its tokens (`usage`: the
prompt's and the answer's length over 4), and the fake counts calls and tokens per
window of time (`most_calls_in_window`, `most_tokens_in_window`) and the most calls in
flight at once (`peak_in_flight`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ATTEMPT_HEADER = "X-Lesson-Ledger-Attempt"
MAX_HOLD_SECONDS = 30.0
"""A held reply is released after this long even if the test never releases it."""

VALID_LESSON: dict[str, Any] = {
    "lesson": {
        "title": "Fractions on a number line",
        "duration": 30,
        "objectives": ["Place halves and quarters on a number line."],
        "materials": ["number line strips"],
        "overview": "Students place fractions on a number line.",
        "introduction": {
            "description": "Warm-up with halves.",
            "duration": 5,
            "instructions": ["Fold a strip in half."],
            "materials": ["paper strips"],
        },
        "activity": {
            "description": "Place quarters.",
            "duration": 25,
            "instructions": ["Mark 1/4, 2/4 and 3/4.", "Compare with a partner."],
            "materials": [],
        },
    },
    "worksheet": {
        "title": "Fractions practice",
        "instructions": "Mark each fraction.",
        "items": [{"prompt": "Where is 1/2?", "answer": "halfway"}],
    },
}


@dataclass
class Reply:
    """One scripted answer. `content` is the message text (default: a valid lesson);
    `raw` replaces the whole body; `hold` waits for an event (released by the test)."""

    status: int = 200
    delay: float = 0.0
    content: str | None = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None
    usage: dict[str, int] | None = None
    """The answer's token counts (default: from the prompt's and content's lengths)."""


def ok(delay: float = 0.0) -> Reply:
    return Reply(delay=delay)


def error(status: int, retry_after: float | None = None, delay: float = 0.0) -> Reply:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    body = json.dumps({"error": {"message": "scripted", "type": "scripted_error"}})
    return Reply(status=status, raw=body.encode(), headers=headers, delay=delay)


def malformed() -> Reply:
    """A chat completion whose content is not JSON."""
    return Reply(content='{"lesson": {"title": "cut off in the midd')


def stuck_in_a_loop() -> Reply:
    """JSON nested deeper than any parser goes: a model repeating itself."""
    return Reply(content='{"lesson": ' + "[" * 50_000 + "]" * 50_000 + "}")


def invalid_lesson() -> Reply:
    """JSON that is not a lesson (no worksheet, no objectives)."""
    return Reply(content=json.dumps({"lesson": {"title": "Only a title", "duration": 30}}))


def not_a_completion() -> Reply:
    return Reply(raw=b"<html>gateway says hello</html>")


def nested_too_deeply() -> Reply:
    """A body (not the message's content) nested deeper than any parser goes."""
    return Reply(raw=b"[" * 50_000 + b"]" * 50_000)


def hang(seconds: float) -> Reply:
    """Longer than the client's read timeout."""
    return Reply(delay=seconds)


def held(event: threading.Event) -> Reply:
    return Reply(hold=event)


class _Server(ThreadingHTTPServer):
    # Hundreds of clients connect at once: the default backlog (5) would drop some.
    request_queue_size = 1024


def _usage(body: dict[str, Any], content: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
    completion = len(content) // 4
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@dataclass(frozen=True)
class Call:
    """One request the fake received."""

    attempt_key: str | None
    body: dict[str, Any]
    headers: dict[str, str]
    """Names in lowercase."""
    at: float
    tokens: int = 0
    """The tokens its answer reported (0 for an error)."""

    @property
    def prompt(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))

    @property
    def raw(self) -> str:
        """Everything received, for checking what must never be sent."""
        return json.dumps(self.body) + json.dumps(self.headers)


class FakeOpenAI:
    """The server; use as a context manager. `default` answers unscripted calls."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or ok()
        self.calls: list[Call] = []
        self.in_flight: Counter[str | None] = Counter()
        self.peak_in_flight = 0
        self.barrier: int | None = None
        self._script: dict[str, list[Reply]] = {}
        self._lock = threading.Condition()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # Lifecycle.

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    # Scripting and inspecting.

    def script(self, attempt_key: str, *replies: Reply) -> None:
        """Replies for this attempt's calls, in order; after them, the default."""
        with self._lock:
            self._script.setdefault(attempt_key, []).extend(replies)

    def hold_until_in_flight(self, count: int | None) -> None:
        """Hold every call until `count` calls are in flight at once (None: lift it)."""
        with self._lock:
            self.barrier = count
            self._lock.notify_all()

    def calls_for(self, attempt_key: str) -> int:
        with self._lock:
            return sum(1 for call in self.calls if call.attempt_key == attempt_key)

    def calls_by_attempt(self) -> Counter[str | None]:
        with self._lock:
            return Counter(call.attempt_key for call in self.calls)

    def most_calls_in_window(self, seconds: float) -> int:
        """The most calls that arrived within any `seconds` (a sliding window)."""
        with self._lock:
            times = sorted(call.at for call in self.calls)
        most, first = 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= seconds:
                first += 1
            most = max(most, last - first + 1)
        return most

    def most_tokens_in_window(self, seconds: float) -> int:
        """The most tokens answered for calls that arrived within any `seconds`."""
        with self._lock:
            calls = sorted((call.at, call.tokens) for call in self.calls)
        most, first, total = 0, 0, 0
        for at, tokens in calls:
            total += tokens
            while at - calls[first][0] >= seconds:
                total -= calls[first][1]
                first += 1
            most = max(most, total)
        return most

    def arrivals(self, attempt_key: str) -> list[float]:
        """When this attempt's calls arrived (monotonic seconds)."""
        with self._lock:
            return [call.at for call in self.calls if call.attempt_key == attempt_key]

    def in_flight_keys(self) -> set[str | None]:
        with self._lock:
            return {key for key, count in self.in_flight.items() if count > 0}

    def wait_until(
        self, condition: Callable[[FakeOpenAI], bool], timeout: float, what: str
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._lock.wait(min(remaining, 0.05))

    # Serving.

    def _answer(
        self, key: str | None, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[Reply, int]:
        with self._lock:
            self.calls.append(Call(key, body, headers, time.monotonic()))
            index = len(self.calls) - 1
            self.in_flight[key] += 1
            self.peak_in_flight = max(self.peak_in_flight, sum(self.in_flight.values()))
            queue = self._script.get(key or "", [])
            reply = queue.pop(0) if queue else self.default
            self._lock.notify_all()
            deadline = time.monotonic() + MAX_HOLD_SECONDS
            while (
                self.barrier is not None
                and sum(self.in_flight.values()) < self.barrier
                and time.monotonic() < deadline
            ):
                self._lock.wait(0.05)
        if reply.hold is not None:
            reply.hold.wait(MAX_HOLD_SECONDS)
        if reply.delay:
            time.sleep(reply.delay)
        return reply, index

    def _count_tokens(self, index: int, tokens: int) -> None:
        with self._lock:
            call = self.calls[index]
            self.calls[index] = Call(call.attempt_key, call.body, call.headers, call.at, tokens)

    def _done(self, key: str | None) -> None:
        with self._lock:
            self.in_flight[key] -= 1
            self._lock.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get(ATTEMPT_HEADER)
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": {"type": "not_found"}}', {})
                    return
                reply, index = fake._answer(
                    key, body, {k.lower(): v for k, v in self.headers.items()}
                )
                # Not in flight any more from here: the answer is about to be written, so
                # a worker killed while a call is "in flight" cannot have its answer.
                fake._done(key)
                payload = reply.raw
                if payload is None:
                    content = reply.content
                    if content is None:
                        content = json.dumps(VALID_LESSON)
                    usage = reply.usage or _usage(body, content)
                    fake._count_tokens(index, usage.get("total_tokens", 0))
                    payload = json.dumps(
                        {
                            "id": "chatcmpl-fake",
                            "object": "chat.completion",
                            "model": body.get("model", "fake-model"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": usage,
                        }
                    ).encode()
                self._send(reply.status, payload, reply.headers)

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a killed worker, or a timeout)

        return Handler
