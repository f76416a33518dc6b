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
    logits = np.array(model(ref["tokens"]))
    want = np.array(ref["logits"])
    if name.endswith("_q4"):
        # A short prompt (12 tokens, at most DECODE_FAMILY_ROWS = 32) takes the default int8
        # activation product, whose error the tiny random models amplify: the Rust suite
        # (models_mlx.rs, quantized_models_default_path) measured up to 5.6 % of max|logit| and
        # checks 15 %; it checks the exact product against MLX tightly.
        np.testing.assert_allclose(logits, want, rtol=0, atol=0.15 * max(1.0, np.abs(want).max()))
    else:
        np.testing.assert_allclose(logits, want, rtol=2e-3, atol=2e-3)


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


# ---- batch_generate ------------------------------------------------------------------------

def _stream_tokens(model, tok, prompt, **kw):
    """Tokens and text of one stream_generate run, with mlx_lm's batch convention: the token
    that ended the sequence with "stop" (EOS) is left out."""
    rs = list(rmlx.lm.stream_generate(model, tok, prompt, **kw))
    toks = [r.token for r in rs]
    if rs and rs[-1].finish_reason == "stop":
        toks = toks[:-1]
    return toks, "".join(r.text for r in rs), rs


def test_batch_equals_one_by_one(tiny):
    _, model, tok, ref = tiny
    seq = [int(t) for t in ref["tokens"].tolist()[0]]
    prompts = [seq[:5], seq[:2], seq[1:9], seq[:1], seq[3:6]]
    limits = [6, 3, 8, 1, 5]
    r = rmlx.lm.batch_generate(model, tok, prompts, max_tokens=limits, return_token_ids=True)
    assert isinstance(r, rmlx.lm.BatchResponse) and len(r.texts) == len(prompts)
    for p, m, text, ids in zip(prompts, limits, r.texts, r.token_ids):
        want, want_text, _ = _stream_tokens(model, tok, p, max_tokens=m)
        assert ids == want and text == want_text
        assert len(ids) <= m


def test_batch_fields_and_stats(tiny):
    _, model, tok, ref = tiny
    seq = [int(t) for t in ref["tokens"].tolist()[0]]
    r = rmlx.lm.batch_generate(model, tok, [seq[:4], seq[:3]], max_tokens=3)
    assert r.caches is None and r.token_ids is None and r.logprobs is None
    s = r.stats
    assert isinstance(s, rmlx.lm.BatchStats)
    assert s.prompt_tokens == 7 and 1 <= s.generation_tokens <= 6
    assert 1 <= s.generation_steps <= 2 and s.wall_time >= s.prompt_time >= 0
    assert s.prompt_tps > 0 and s.generation_tps >= 0 and s.decode_tps >= 0
    assert s.peak_memory > 0 and s.overhead_time >= 0 and s.generation_time >= 0
    r = rmlx.lm.batch_generate(model, tok, [seq[:4], seq[:3]], max_tokens=3,
                               return_token_ids=True, return_logprobs=True)
    for p, ids, lps in zip([seq[:4], seq[:3]], r.token_ids, r.logprobs):
        assert len(lps) == len(ids) and all(lp <= 0 for lp in lps)
        # The sampled token's log-probability, as stream_generate's logprobs give it.
        _, _, rs = _stream_tokens(model, tok, p, max_tokens=3)
        for t, lp, step in zip(ids, lps, rs):
            assert abs(float(step.logprobs[t].item()) - lp) < 1e-4


def test_batch_sampling_seeds_reproduce_generate(tiny):
    _, model, tok, ref = tiny
    seq = [int(t) for t in ref["tokens"].tolist()[0]]
    prompts = [seq[:4], seq[:4], seq[2:5]]
    sampler = make_sampler(temp=1.0, top_k=30)
    r = rmlx.lm.batch_generate(model, tok, prompts, max_tokens=5, sampler=sampler, seed=11,
                               return_token_ids=True)
    for i, (p, ids) in enumerate(zip(prompts, r.token_ids)):
        want, _, _ = _stream_tokens(model, tok, p, max_tokens=5, sampler=sampler, seed=11 + i)
        assert ids == want
    procs = make_logits_processors(logit_bias={9: 1e4})
    r = rmlx.lm.batch_generate(model, tok, ["t5 t6", "t7"], max_tokens=2, logits_processors=procs)
    assert [t.split() for t in r.texts] == [["t9", "t9"], ["t9", "t9"]]


def test_batch_prompt_caches_continue_a_sequence(tiny):
    _, model, tok, ref = tiny
    seq = [int(t) for t in ref["tokens"].tolist()[0]]
    first = rmlx.lm.batch_generate(model, tok, [seq[:5]], max_tokens=4, return_prompt_caches=True,
                                   return_token_ids=True)
    cache = first.caches[0]
    assert isinstance(cache, rmlx.lm.PromptCache) and len(cache) == model.num_layers
    # The cache holds the prompt and every generated token but the last (never fed back).
    gen = first.token_ids[0]
    assert cache.tokens == (seq[:5] + gen)[:cache.offset] and cache.nbytes > 0
    assert cache.offset in (5 + len(gen) - 1, 5 + len(gen))
    follow = [3, 4]
    again = rmlx.lm.batch_generate(model, tok, [follow, follow], prompt_caches=[cache, None],
                                   max_tokens=3, return_token_ids=True)
    want, _, _ = _stream_tokens(model, tok, cache.tokens + follow, max_tokens=3)
    assert again.token_ids[0] == want
    want_fresh, _, _ = _stream_tokens(model, tok, follow, max_tokens=3)
    assert again.token_ids[1] == want_fresh
    # The cache given in is unchanged and can be used again.
    assert cache.offset == len(cache.tokens)
    twice = rmlx.lm.batch_generate(model, tok, [follow], prompt_caches=[cache], max_tokens=3,
                                   return_token_ids=True)
    assert twice.token_ids == again.token_ids[:1]


def test_batch_errors(tiny):
    _, model, tok, _ = tiny
    bg = rmlx.lm.batch_generate
    assert bg(model, tok, []).texts == []  # as mlx_lm: nothing to do
    with pytest.raises(ValueError, match="empty prompt"):
        bg(model, tok, [[5, 6], []])
    with pytest.raises(TypeError, match="list of prompts"):
        bg(model, tok, "t5 t6")
    with pytest.raises(TypeError, match="prompt 1"):
        bg(model, tok, [[5], [5.5]])
    with pytest.raises(TypeError, match="prompt 0"):
        bg(model, tok, [None])
    with pytest.raises(ValueError, match="non-negative"):
        bg(model, tok, [[-1]])
    with pytest.raises(ValueError, match="vocabulary"):
        bg(model, tok, [[5], [10**6]])
    with pytest.raises(ValueError, match="one entry per prompt"):
        bg(model, tok, [[5], [6]], max_tokens=[1])
    with pytest.raises(ValueError, match="max_tokens must be > 0"):
        bg(model, tok, [[5]], max_tokens=0)
    with pytest.raises(TypeError, match="max_tokens"):
        bg(model, tok, [[5]], max_tokens="3")
    with pytest.raises(TypeError, match="unexpected keyword"):
        bg(model, tok, [[5]], foo=1)
    with pytest.raises(TypeError, match="sampler"):
        bg(model, tok, [[5]], sampler=lambda x: x)
    with pytest.raises(TypeError, match="PromptCache"):
        bg(model, tok, [[5]], prompt_caches=[[1, 2]])
    with pytest.raises(ValueError, match="one entry per prompt"):
        bg(model, tok, [[5]], prompt_caches=[None, None])
    with pytest.raises(ValueError, match="completion_batch_size"):
        bg(model, tok, [[5]], completion_batch_size=0)
    with pytest.raises(ValueError, match="max_kv_size"):
        bg(model, tok, [[5]], max_kv_size=16)


@pytest.mark.skipif(not os.path.exists(SMOL), reason="SmolLM2 not fetched (scripts/fetch_models.sh)")
def test_smollm2_batch_equals_generate(capsys):
    model, tok = rmlx.lm.load(SMOL)
    questions = ["What is 2+2?", "Name a color.", "Write one word about the sea.",
                 "What is the capital of France?", "Count to three.", "Say hi."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
    prompts.append("The capital of France is")  # a string prompt, encoded as generate does
    limits = [12, 8, 10, 12, 9, 6, 3]
    r = rmlx.lm.batch_generate(model, tok, prompts, max_tokens=limits, verbose=True)
    out = capsys.readouterr().out
    assert "[batch_generate] Finished processing 7/7" in out and "tokens-per-sec" in out
    for p, m, text in zip(prompts, limits, r.texts):
        assert text == rmlx.lm.generate(model, tok, p, max_tokens=m)
    assert r.texts[-1].startswith(" Paris.")
    # Several decode passes per step (2 rows each) give the same tokens.
    small = rmlx.lm.batch_generate(model, tok, prompts, max_tokens=limits, completion_batch_size=2)
    assert small.texts == r.texts


@pytest.mark.skipif(not os.path.exists(SMOL), reason="SmolLM2 not fetched (scripts/fetch_models.sh)")
def test_batch_generate_releases_the_gil():
    import threading

    model, tok = rmlx.lm.load(SMOL)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)

    t = threading.Thread(target=ticker)
    t.start()
    rmlx.lm.batch_generate(model, tok, [[1, 2, 3, 4]] * 3, max_tokens=16)
    stop.set()
    t.join()
    assert len(ticks) > 10


def test_mlx_lm_import_paths():
    from rmlx.lm.generate import BatchResponse, BatchStats, batch_generate  # as mlx_lm.generate

    assert batch_generate is rmlx.lm.batch_generate and BatchResponse is rmlx.lm.BatchResponse
    assert BatchStats is rmlx.lm.BatchStats and callable(rmlx.lm.generate)
