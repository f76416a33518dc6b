#!/usr/bin/env python3
"""Load test for `rmlx serve` (standard library only, so it runs on any machine with python3):
N concurrent clients each send streaming chat requests back to back for a fixed time, then it
prints requests/s, generation tok/s (the server's usage counts; content chunks where a server
sends none), time to first token and inter-token latency (p50/p99), and errors (which must be
0). Loopback only by default.

    python3 scripts/loadtest.py --url http://127.0.0.1:8080 --clients 8 --seconds 30 --max-tokens 64
"""
import argparse
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlparse

PROMPTS = [
    "Write a short poem about the sea.",
    "What is the capital of France? Answer in one sentence.",
    "List three uses of a paperclip.",
    "Explain photosynthesis to a ten-year-old.",
    "Give me a recipe idea with tomatoes and rice.",
    "Why is the sky blue?",
    "Summarize the plot of a heist movie in three sentences.",
    "What are prime numbers? Give examples.",
]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def client(i, args, deadline, out, lock):
    u = urlparse(args.url)
    n = 0
    while time.time() < deadline:
        body = {
            "model": "rmlx",
            "messages": [{"role": "user", "content": PROMPTS[(i + n) % len(PROMPTS)]}],
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "seed": i * 1000 + n,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        n += 1
        headers = {"Content-Type": "application/json"}
        if args.api_key:
            headers["Authorization"] = "Bearer " + args.api_key
        t0 = time.time()
        ttft, itl, tokens, chunks, err = None, [], None, 0, None
        try:
            c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
            c.request("POST", "/v1/chat/completions", json.dumps(body), headers)
            r = c.getresponse()
            if r.status != 200:
                err = f"HTTP {r.status}: {r.read()[:200]!r}"
            else:
                last, done = None, False
                for raw in r:
                    line = raw.decode().strip()
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        break
                    ev = json.loads(data)
                    if "error" in ev:
                        err = ev["error"].get("message", "error")
                        break
                    if ev.get("usage"):
                        tokens = ev["usage"]["completion_tokens"]
                    for ch in ev.get("choices", []):
                        if ch.get("delta", {}).get("content"):
                            chunks += 1
                            now = time.time()
                            if ttft is None:
                                ttft = now - t0
                            else:
                                itl.append(now - last)
                            last = now
                if not done and err is None:
                    err = "stream ended without [DONE]"
            c.close()
        except Exception as e:  # noqa: BLE001 - every failure counts as an error
            err = repr(e)
        with lock:
            if err:
                out["errors"].append(err)
            else:
                out["requests"] += 1
                if tokens is None:  # a server that sends no usage (llama-cpp-python's)
                    out["no_usage"] += 1
                    tokens = chunks
                out["tokens"] += tokens
                if ttft is not None:
                    out["ttft"].append(ttft)
                out["itl"].extend(itl)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args()
    out = {"requests": 0, "tokens": 0, "no_usage": 0, "ttft": [], "itl": [], "errors": []}
    lock = threading.Lock()
    start = time.time()
    deadline = start + args.seconds
    ts = [threading.Thread(target=client, args=(i, args, deadline, out, lock)) for i in range(args.clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.time() - start
    ms = lambda x: x * 1000  # noqa: E731
    print(f"clients={args.clients} seconds={wall:.1f} max_tokens={args.max_tokens}")
    print(f"requests={out['requests']} requests/s={out['requests'] / wall:.2f}")
    note = f"; {out['no_usage']} answers without usage: content chunks counted" if out["no_usage"] else ""
    print(f"generation tok/s={out['tokens'] / wall:.1f} (completion tokens {out['tokens']}{note})")
    print(f"TTFT ms p50={ms(pct(out['ttft'], 50)):.0f} p99={ms(pct(out['ttft'], 99)):.0f}")
    print(f"ITL ms p50={ms(pct(out['itl'], 50)):.1f} p99={ms(pct(out['itl'], 99)):.1f}")
    print(f"errors={len(out['errors'])}")
    for e in out["errors"][:5]:
        print("  error:", e)
    sys.exit(1 if out["errors"] else 0)


if __name__ == "__main__":
    main()
