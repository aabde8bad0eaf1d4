"""The child process that runs the local GGUF model for `recoworld.llm.supervisor.ModelProcess`.

    python -m recoworld.llm.local_worker --model PATH --n-ctx 4096 [--n-threads 2] [--slots 8] [--batch 1]

Native model code can crash (llama.cpp's AMX kernels segfault on some CPUs) or be OOM-killed.
Running it here keeps such a crash to one process that the supervisor restarts; the
simulation goes on.

Protocol: one JSON object per line. The worker writes `{"ready": true, "load_s": ...}` once
the model is loaded and warmed up (`Batcher.warm_up`), then answers each request line,
`{"id", "kwargs"}` (the keyword arguments of `Llama.create_chat_completion`: grammar decoding)
or `{"id", "batch"}` (a list of `llama_decoding.DecodeRequest`, decoded together: schema
decoding; the result is their list of `llama_decoding.Outcome`), with
`{"id", "ok": true, "result": ...}` or `{"id", "ok": false, "error": <exception class>, "message": ...}`.
The protocol uses a private copy of stdout; fd 1 is pointed at stderr (the model log), so whatever llama.cpp
prints cannot corrupt a reply.

The worker never outlives its parent: a watchdog thread exits within half a second of the
parent's death (even by SIGKILL), and the request loop ends when stdin closes. It ignores
SIGINT, so Ctrl-C reaches the simulator, which then stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import IO, Any

from recoworld.llm.llama_decoding import Batcher, failure


def _die_with_parent(parent: int) -> None:
    """Exit once `parent` is gone. A watchdog, not PR_SET_PDEATHSIG: that fires when the *thread*
    that started us exits, and the supervisor may start us from a short-lived worker thread."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    if os.getppid() != parent:  # the parent died before we got here
        os._exit(0)
    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _protocol_stream() -> IO[str]:
    """A private duplicate of stdout for replies; fd 1 then goes to the log like fd 2."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    return out


def _answer(llm: Any, batcher: Batcher, request: dict[str, Any]) -> dict[str, Any]:
    try:
        if "batch" in request:
            result: Any = batcher.answer(request["batch"])
        else:
            result = llm.create_chat_completion(**request["kwargs"])
    except Exception as err:  # sent back; the supervisor decides whether to retry
        return {"id": request.get("id"), **failure(err)}
    return {"id": request.get("id"), "ok": True, "result": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--n-threads", type=int, default=None)
    parser.add_argument("--slots", type=int, default=8, help="sequences kept cached (llm.local.cache_slots)")
    parser.add_argument("--batch", type=int, default=1, help="requests decoded together (llm.local.batch)")
    parser.add_argument("--parent", type=int, default=os.getppid())
    args = parser.parse_args(argv)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(args.parent)
    out = _protocol_stream()

    started = time.perf_counter()
    from llama_cpp import Llama

    llm = Llama(model_path=args.model, n_ctx=args.n_ctx, n_threads=args.n_threads, verbose=False)
    batcher = Batcher(llm, args.slots, args.batch)
    batcher.warm_up()
    print(f"ready: loaded {args.model} in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    out.write(json.dumps({"ready": True, "load_s": time.perf_counter() - started, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            print(f"request {request.get('id')}", file=sys.stderr, flush=True)  # the log shows what was in flight
            out.write(json.dumps(_answer(llm, batcher, request)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
