"""A loopback chat-completions server that answers like a model and injects faults on cue.

It speaks the OpenAI `POST /v1/chat/completions` protocol. Answers are filled in from the
request's JSON schema (response_format, the schema written into a prompt-mode message, or
a tool's parameters), with choices drawn from a generator seeded by the request itself, so
the same request always gets the same answer. It is a scripted stand-in for a model server,
not a mock of RecoWorld: the client, the backend and the user run for real against it.

Faults are queued with `inject(...)` and consumed one per request, in arrival order:

| fault            | what the server does                                              |
|------------------|-------------------------------------------------------------------|
| `"timeout"`      | waits `hang_s` before answering (set the client timeout below it) |
| `"500"`          | HTTP 500 with an error body (also `"429"`, `"503"`: that status)  |
| `"malformed"`    | content that is not valid JSON                                    |
| `"hallucinate"`  | valid JSON whose `item` ids are not in the slate                  |
| `"out_of_range"` | valid JSON with satisfaction 7.5 and a negative dwell             |
| `"refuse"`       | no content and a `refusal` message                                |
| `"garbage"`      | HTTP 200 with a body that is not JSON at all                      |

`reject_formats={"json_schema"}` answers those response formats with HTTP 500, as
llama-cpp-python's server does. `latency_s` adds a fixed think time to every answer.

`down_after=N` kills the server at its N-th request: that request and every later one get
no answer, and the port stops listening, so new connections are refused, as when a model
server dies mid-run. `FaultServer(port=p)` starts a server on a given port, e.g. to bring
a killed one back at the same URL.

`barrier=N` holds the first requests until N of them are in flight at once (for at most
`barrier_timeout_s`), then lets every request through. A test of concurrency then rests on
an event, not on timing: `barrier_met` says whether N requests overlapped, and
`max_in_flight` how many did at most.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SCHEMA_MARK = "follows this JSON schema:\n"


def fill(schema: dict[str, Any], rng: random.Random, name: str = "") -> Any:
    """A value that satisfies `schema` (the subset RecoWorld and pydantic generate)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "anyOf" in schema and "properties" not in schema:  # an object's branches also list every property
        return fill(rng.choice(schema["anyOf"]), rng, name)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {key: fill(sub, rng, key) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        if "prefixItems" in schema:
            return [fill(sub, rng, name) for sub in schema["prefixItems"]]
        n = max(schema.get("minItems", 0), min(schema.get("maxItems", 2), 2) if "items" in schema else 0)
        return [fill(schema["items"], rng, name) for _ in range(n)]
    if kind == "number":
        return round(rng.uniform(0.0, 6.0 if name.endswith(("_min", "_days")) else 1.0), 3)
    if kind == "integer":
        return rng.randint(0, 5)
    if kind == "boolean":
        return rng.random() < (0.9 if name == "come_back" else 0.25)
    if kind == "null":
        return None
    return "fine"[: schema.get("maxLength", 4)] if kind == "string" else None


def _hallucinate(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (999_000 + v if k == "item" and isinstance(v, int) else _hallucinate(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_hallucinate(v) for v in value]
    return value


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 stalls connection attempts once more requests are in flight.
    request_queue_size = 128


class FaultServer:
    def __init__(self, latency_s: float = 0.0, hang_s: float = 3.0, barrier: int = 1,
                 barrier_timeout_s: float = 10.0, port: int = 0, down_after: int | None = None) -> None:
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.barrier = barrier
        self.barrier_timeout_s = barrier_timeout_s
        self.barrier_met = barrier <= 1
        self._barrier_deadline: float | None = None
        self.reject_formats: set[str] = set()
        self.faults: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.busy_s = 0.0
        self.down_after = down_after
        self._down = False
        self._stopped = False
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._httpd = _Server(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def inject(self, *faults: str) -> None:
        self.faults.extend(faults)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        """Stop listening (idempotent): new connections are refused from now on."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def _wait_at_barrier(self) -> None:
        """Called with the lock held, after counting a request in: hold it until `barrier` are in flight."""
        if self.barrier_met:
            return
        if self.in_flight >= self.barrier:
            self.barrier_met = True
            self._arrived.notify_all()
            return
        if self._barrier_deadline is None:  # one bounded wait for the whole barrier, not one per request
            self._barrier_deadline = time.monotonic() + self.barrier_timeout_s
        self._arrived.wait_for(lambda: self.barrier_met, timeout=max(self._barrier_deadline - time.monotonic(), 0.0))

    # ------------------------------------------------------------------ answering

    def _answer(self, body: dict[str, Any], fault: str | None) -> tuple[int, dict[str, Any] | bytes]:
        rng = random.Random(json.dumps([body.get("messages"), body.get("seed")], sort_keys=True))
        fmt = body.get("response_format") or {}
        if fmt.get("type") in self.reject_formats:
            return 500, {"error": {"message": f"response_format {fmt.get('type')} is not supported"}}
        if fault in ("500", "503", "429"):
            return int(fault), {"error": {"message": "injected server error"}}
        if fault == "garbage":
            return 200, b"<html>not json</html>"
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if body.get("tools"):
            choice = body.get("tool_choice")
            forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
            tool = next(t for t in body["tools"] if forced in (None, t["function"]["name"]))["function"]
            args = fill(tool["parameters"], rng)
            message["tool_calls"] = [{"id": "call_0", "type": "function",
                                      "function": {"name": tool["name"], "arguments": json.dumps(args)}}]
        else:
            schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema")
            if schema is None:
                text = body["messages"][-1]["content"]
                schema = json.loads(text[text.index(_SCHEMA_MARK) + len(_SCHEMA_MARK):]) if _SCHEMA_MARK in text else {}
            value = fill(schema, rng)
            if fault == "hallucinate":
                value = _hallucinate(value)
            elif fault == "out_of_range" and isinstance(value, dict):
                value["satisfaction"] = 7.5
                for r in value.get("reactions", []):
                    r["dwell_min"] = -3.0
            content = json.dumps(value)
            if fault == "malformed":
                content = content[: len(content) // 2] + "<<oops"
            if fault == "refuse":
                content, message["refusal"] = None, "I can't help with that."
            message["content"] = content
        prompt = len(json.dumps(body.get("messages"))) // 4
        completion = len(json.dumps(message)) // 4
        return 200, {
            "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "loopback"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                started = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server._lock:
                    dying = server.down_after is not None and len(server.requests) + 1 >= server.down_after
                    first_death, server._down = dying and not server._down, server._down or dying
                if dying:  # no answer: the connection just closes, and the port stops listening
                    if first_death:
                        threading.Thread(target=server.stop, daemon=True).start()
                    self.close_connection = True
                    return
                with server._lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    fault = server.faults.popleft() if server.faults else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server._wait_at_barrier()
                try:
                    time.sleep(server.hang_s if fault == "timeout" else server.latency_s)
                    status, payload = server._answer(body, fault)
                finally:
                    # Out of flight before the reply is written: once the client has it, it may send its next
                    # request, which must not find this one still counted.
                    with server._lock:
                        server.in_flight -= 1
                        server.busy_s += time.perf_counter() - started
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        return Handler
