"""rmlx.lm with mlx_lm's API on the tiny MLX-written checkpoints (tests/fixtures/models), given
a small word-level tokenizer; and on SmolLM2 when scripts/fetch_models.sh has fetched it."""

import json
import os
import shutil

import numpy as np
import pytest

import rmlx.core as mx
import rmlx.lm
from conftest import FIXTURES
from rmlx.lm.sample_utils import make_logits_processors, make_sampler

ARCHS = ["llama", "qwen2", "qwen3", "gemma3", "llama_q4"]


def word_tokenizer(vocab_size):
    """A tokenizer.json whose words are t0..t{V-1}, split on whitespace; t1 is EOS."""
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {f"t{i}": i for i in range(vocab_size)}, "unk_token": "t0"},
    }


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    src = os.path.join(FIXTURES, "models", request.param)
    dst = tmp_path_factory.mktemp(request.param)
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), dst / f)
    cfg = json.load(open(dst / "config.json"))
    vocab = cfg.get("vocab_size") or cfg["text_config"]["vocab_size"]
    json.dump(word_tokenizer(vocab), open(dst / "tokenizer.json", "w"))
    json.dump({"eos_token": "t1"}, open(dst / "tokenizer_config.json", "w"))
    ref = mx.load(str(dst / "reference.safetensors"))
    model, tok = rmlx.lm.load(str(dst))
    return request.param, model, tok, ref


def test_logits_match_mlx_reference(tiny):
    name, model, _, ref = tiny
    logits = model(ref["tokens"])
    tol = 5e-2 if name.endswith("_q4") else 2e-3
    np.testing.assert_allclose(np.array(logits), np.array(ref["logits"]), rtol=tol, atol=tol)


def test_greedy_generation_is_the_argmax_chain(tiny):
    _, model, tok, ref = tiny
    prompt = [int(t) for t in ref["tokens"].tolist()[0][:5]]
    # The reference: re-run the whole sequence without a cache and take the argmax each step.
    seq = list(prompt)
    for _ in range(6):
        nxt = int(mx.argmax(model(mx.array(seq))[0, -1]).item())
        if nxt in tok.eos_token_ids:
            break
        seq.append(nxt)
    out = list(rmlx.lm.stream_generate(model, tok, prompt, max_tokens=6))
    got = [r.token for r in out if r.token not in tok.eos_token_ids]
    assert got == seq[len(prompt):]
    text = rmlx.lm.generate(model, tok, prompt, max_tokens=6)
    assert text.split() == [f"t{t}" for t in got]


def test_response_fields(tiny):
    _, model, tok, ref = tiny
    prompt = [int(t) for t in ref["tokens"].tolist()[0][:4]]
    sampler = make_sampler(temp=0.8, top_k=20)
    rs = list(rmlx.lm.stream_generate(model, tok, prompt, max_tokens=3, sampler=sampler, seed=5))
    last = rs[-1]
    assert last.finish_reason in ("length", "stop")
    assert all(r.finish_reason is None for r in rs[:-1])
    assert last.prompt_tokens == 4 and last.generation_tokens == len(rs)
    assert last.prompt_tps > 0 and last.peak_memory >= 0 and last.from_draft is False
    assert last.logprobs.shape == (model(mx.array(prompt)).shape[-1],)
    # Seeds reproduce.
    again = list(rmlx.lm.stream_generate(model, tok, prompt, max_tokens=3, sampler=sampler, seed=5))
    assert [r.token for r in again] == [r.token for r in rs]


def test_string_prompt_and_processors(tiny):
    _, model, tok, _ = tiny
    ids = tok.encode("t5 t6 t7")
    assert ids == [5, 6, 7] and tok.decode(ids) == "t5 t6 t7"
    procs = make_logits_processors(logit_bias={9: 1e4})
    text = rmlx.lm.generate(model, tok, "t5 t6 t7", max_tokens=2, logits_processors=procs)
    assert text.split() == ["t9", "t9"]


def test_errors(tiny, tmp_path):
    _, model, tok, _ = tiny
    with pytest.raises(ValueError, match="empty"):
        next(iter(rmlx.lm.stream_generate(model, tok, [])))
    with pytest.raises(TypeError, match="sampler"):
        rmlx.lm.generate(model, tok, [1, 2], sampler=lambda x: x)
    with pytest.raises(FileNotFoundError, match="local"):
        rmlx.lm.load(str(tmp_path / "nope"))
    with pytest.raises(RuntimeError):
        rmlx.lm.load(str(tmp_path))


SMOL = os.path.join(os.environ.get("RMLX_CACHE", os.path.expanduser("~/.cache/rmlx")),
                    "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.skipif(not os.path.exists(SMOL), reason="SmolLM2 not fetched (scripts/fetch_models.sh)")
def test_smollm2_generation():
    model, tok = rmlx.lm.load(SMOL)
    # The same greedy continuation the CLI test (crates/rmlx-cli/tests/cli.rs) expects.
    assert rmlx.lm.generate(model, tok, "The capital of France is", max_tokens=3).startswith(" Paris.")
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert tok.encode(text, add_special_tokens=False) == ids and "Hi" in text
    rs = list(rmlx.lm.stream_generate(model, tok, ids, max_tokens=4))
    assert len(rs) <= 4 and rs[-1].generation_tps > 0
