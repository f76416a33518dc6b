#!/usr/bin/env python3
"""`rmlx serve` through the official `openai` Python client: start the server on a free port
with the tiny chat fixture (and an API key), then list models, chat (whole and streamed, with
usage), complete with logprobs, and check that bad requests and a wrong key raise the client's
own error classes. Run by scripts/openai_compat_test.sh, which makes the venv.

    python scripts/openai_compat_test.py path/to/rmlx
"""
import re
import subprocess
import sys
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests/fixtures/models/tiny_chat"
KEY = "test-key-123"


def start(rmlx):
    p = subprocess.Popen(
        [rmlx, "serve", "--model", str(MODEL), "--port", "0", "--device", "cpu",
         "--api-key", KEY, "--max-tokens", "16"],
        stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.search(r"listening on (http://\S+?)[,\s]", line + " ")
        if m:
            return p, m.group(1)
    p.wait()
    raise SystemExit(f"rmlx serve exited with {p.returncode} before listening")


def main():
    rmlx = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/debug/rmlx")
    proc, base = start(rmlx)
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
        models = client.models.list()
        model = models.data[0].id
        assert model, models

        msgs = [{"role": "user", "content": "hello"}]
        r = client.chat.completions.create(model=model, messages=msgs, max_tokens=12,
                                           temperature=0, seed=1)
        whole = r.choices[0].message.content
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].finish_reason in ("stop", "length"), r
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

        stream = client.chat.completions.create(model=model, messages=msgs, max_tokens=12,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True})
        parts, usage, finish = [], None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                parts.append(c.delta.content or "")
                finish = c.finish_reason or finish
        assert "".join(parts) == whole, ("".join(parts), whole)
        assert usage is not None and usage.completion_tokens == r.usage.completion_tokens
        assert finish == r.choices[0].finish_reason

        c = client.completions.create(model=model, prompt="abc", max_tokens=6, temperature=0,
                                      logprobs=2)
        lp = c.choices[0].logprobs
        assert len(lp.token_logprobs) == c.usage.completion_tokens, lp
        assert all(len(t) == 2 for t in lp.top_logprobs), lp
        text = "".join(ch.choices[0].text for ch in client.completions.create(
            model=model, prompt="abc", max_tokens=6, temperature=0, stream=True))
        assert text == c.choices[0].text, (text, c.choices[0].text)

        r = client.chat.completions.create(model=model, messages=msgs, max_tokens=8,
                                           temperature=0, logprobs=True, top_logprobs=3)
        assert len(r.choices[0].logprobs.content[0].top_logprobs) == 3

        for bad in ({"max_tokens": -1}, {"temperature": -2}, {"top_p": 3}):
            try:
                client.chat.completions.create(model=model, messages=msgs, **bad)
                raise AssertionError(f"{bad} was accepted")
            except openai.BadRequestError as e:
                assert e.status_code == 400 and e.message, e
        try:
            openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError as e:
            assert e.status_code == 401
        print(f"openai client {openai.__version__}: all checks passed against {base}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
