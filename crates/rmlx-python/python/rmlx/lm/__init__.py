"""mlx_lm's front door on rmlx: ``load``, ``generate``, ``stream_generate``,
``batch_generate``.

``model, tokenizer = rmlx.lm.load(path)`` takes a local Hugging Face / mlx-community directory
or a ``.gguf`` file (nothing is downloaded). Sampling is configured as in mlx_lm, with
``sampler=make_sampler(...)`` and ``logits_processors=make_logits_processors(...)``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Union

from rmlx.core import _lm
from rmlx.core import array as _array
from rmlx.core import get_peak_memory as _get_peak_memory

from .sample_utils import LogitsProcessors, Sampler, make_logits_processors, make_sampler

GenerationResponse = _lm.GenerationResponse
Model = _lm.Model
Tokenizer = _lm.Tokenizer
PromptCache = _lm.PromptCache

__all__ = [
    "load",
    "generate",
    "stream_generate",
    "batch_generate",
    "make_sampler",
    "make_logits_processors",
    "BatchResponse",
    "BatchStats",
    "GenerationResponse",
    "Model",
    "PromptCache",
    "Tokenizer",
]


def load(
    path_or_hf_repo: Union[str, os.PathLike],
    tokenizer_config: Optional[dict] = None,
    model_config: Optional[dict] = None,
    adapter_path: Optional[str] = None,
    lazy: bool = False,
    return_config: bool = False,
    dtype: Any = None,
):
    """Load a model and its tokenizer: ``(model, tokenizer)``, plus the config dict when
    ``return_config``.

    ``path_or_hf_repo`` must be a local directory (``config.json``, ``*.safetensors``,
    ``tokenizer.json``) or a ``.gguf`` file. Weights are memory-mapped, so ``lazy`` changes
    nothing. ``dtype`` (e.g. ``mx.float16``) casts the float weights.
    """
    path = os.fspath(path_or_hf_repo)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"[load] {path!r} does not exist: rmlx.lm.load takes a local model directory or "
            "a .gguf file (download it first, e.g. with huggingface-cli download)"
        )
    if adapter_path is not None:
        raise ValueError("[load] LoRA adapters are not supported yet (adapter_path)")
    if model_config:
        raise ValueError("[load] model_config overrides are not supported yet")
    model, tokenizer = _lm.load(path, dtype)
    if return_config:
        return model, tokenizer, json.loads(model.config_json)
    return model, tokenizer


def _prompt_ids(tokenizer, prompt) -> List[int]:
    """mlx_lm's rule: text is encoded with special tokens unless it already starts with BOS."""
    if isinstance(prompt, str):
        bos = tokenizer.bos_token
        add_special = bos is None or not prompt.startswith(bos)
        return tokenizer.encode(prompt, add_special_tokens=add_special)
    if isinstance(prompt, _array):
        if prompt.ndim != 1:
            raise ValueError(f"a prompt array must be 1-D token ids, got shape {prompt.shape}")
        prompt = prompt.tolist()
    out = []
    for t in prompt:
        if isinstance(t, bool) or not isinstance(t, int):
            try:
                import operator

                t = operator.index(t)  # NumPy integers
            except TypeError:
                raise TypeError(
                    f"a prompt must be a string or a sequence of int token ids, got an element "
                    f"of type {type(t).__name__}"
                ) from None
        if t < 0:
            raise ValueError(f"token ids must be non-negative, got {t}")
        out.append(t)
    return out


def stream_generate(
    model,
    tokenizer,
    prompt: Union[str, Sequence[int], _array],
    max_tokens: int = 256,
    draft_model=None,
    **kwargs,
) -> Iterator[GenerationResponse]:
    """Yield a ``GenerationResponse`` per generated token (``text``, ``token``, ``logprobs``,
    ``from_draft``, ``prompt_tokens``, ``prompt_tps``, ``generation_tokens``,
    ``generation_tps``, ``peak_memory``, ``finish_reason``).

    Keyword arguments as mlx_lm: ``sampler``, ``logits_processors``, ``prefill_step_size``,
    ``kv_bits``, ``kv_group_size``; also ``seed`` and ``stop`` (a list of stop strings).
    """
    if draft_model is not None:
        raise ValueError("[stream_generate] speculative decoding (draft_model) is not supported yet")
    settings = _sampling_settings("stream_generate", kwargs)
    for ignored in ("max_kv_size", "prompt_cache", "quantized_kv_start", "prompt_progress_callback"):
        if kwargs.get(ignored) is not None:
            raise ValueError(f"[stream_generate] {ignored} is not supported yet")
        kwargs.pop(ignored, None)
    allowed = {"prefill_step_size", "kv_bits", "kv_group_size", "seed", "stop"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"[stream_generate] unexpected keyword arguments: {sorted(unknown)}")
    ids = _prompt_ids(tokenizer, prompt)
    return _lm.stream_generate(model, tokenizer, ids, max_tokens=max_tokens, **settings, **kwargs)


def _sampling_settings(op: str, kwargs: dict) -> dict:
    """The Rust sampler's settings from mlx_lm's ``sampler=`` / ``logits_processors=``
    keywords (or ``temp``, ``top_p``, ``min_p``, ``top_k`` directly)."""
    sampler = kwargs.pop("sampler", None) or make_sampler(
        temp=kwargs.pop("temp", 0.0), top_p=kwargs.pop("top_p", 0.0),
        min_p=kwargs.pop("min_p", 0.0), top_k=kwargs.pop("top_k", 0),
    )
    if not isinstance(sampler, Sampler):
        raise TypeError(
            f"[{op}] sampler must come from rmlx.lm.sample_utils.make_sampler "
            "(custom Python samplers are not supported)"
        )
    procs = kwargs.pop("logits_processors", None) or make_logits_processors()
    if not isinstance(procs, LogitsProcessors):
        raise TypeError(
            f"[{op}] logits_processors must come from rmlx.lm.sample_utils.make_logits_processors"
        )
    return {**sampler._settings(), **procs._settings()}


@dataclass(kw_only=True, repr=True)
class BatchStats:
    """What ``batch_generate`` did, with mlx_lm's fields: ``prompt_tokens`` and
    ``prompt_time`` (prompt processing), ``generation_tokens``, ``generation_steps`` (decode
    steps, each a token for every decoding sequence), ``decode_time``, ``wall_time`` (the
    whole call) and ``peak_memory`` (GB, process-wide)."""

    prompt_tokens: int = 0
    prompt_time: float = 0.0
    generation_tokens: int = 0
    generation_steps: int = 0
    decode_time: float = 0.0
    wall_time: float = 0.0
    peak_memory: float = 0.0

    @property
    def prompt_tps(self) -> float:
        """Prompt tokens per second."""
        return 0.0 if self.prompt_time <= 0.0 else self.prompt_tokens / self.prompt_time

    @property
    def decode_tps(self) -> float:
        """Generated tokens per second of the decode steps alone."""
        return 0.0 if self.decode_time <= 0.0 else self.generation_tokens / self.decode_time

    @property
    def generation_time(self) -> float:
        """Seconds spent generating: the wall time less prompt processing."""
        return max(0.0, self.wall_time - self.prompt_time)

    @property
    def generation_tps(self) -> float:
        """Generated tokens per second of ``generation_time``."""
        t = self.generation_time
        return 0.0 if t <= 0.0 else self.generation_tokens / t

    @property
    def overhead_time(self) -> float:
        """Seconds spent neither decoding nor processing prompts."""
        return max(0.0, self.wall_time - self.prompt_time - self.decode_time)


@dataclass
class BatchResponse:
    """The result of ``batch_generate``, with mlx_lm's fields: ``texts`` (one per prompt),
    ``stats`` (a ``BatchStats``), ``caches`` (one ``PromptCache`` per prompt with
    ``return_prompt_caches``, else None), ``token_ids`` and ``logprobs`` (per prompt, with
    ``return_token_ids`` / ``return_logprobs``, else None). The token that ended a sequence
    (EOS or a stop string's last token) is not in its ``token_ids``, as in mlx_lm."""

    texts: List[str]
    stats: BatchStats
    caches: Optional[List[Any]]
    token_ids: Optional[List[List[int]]] = None
    logprobs: Optional[List[List[float]]] = None


def batch_generate(
    model,
    tokenizer,
    prompts: Sequence[Union[Sequence[int], str, _array]],
    prompt_caches: Optional[List[Any]] = None,
    max_tokens: Union[int, List[int]] = 128,
    verbose: bool = False,
    return_prompt_caches: bool = False,
    return_token_ids: bool = False,
    return_logprobs: bool = False,
    **kwargs,
) -> BatchResponse:
    """Generate completions of several prompts together and return a ``BatchResponse``.

    ``prompts`` are lists of token ids as in mlx_lm (strings are encoded as ``generate``
    encodes them, arrays are 1-D token ids). ``max_tokens`` is one limit or one per prompt.
    ``prompt_caches`` (one ``PromptCache`` or None per prompt, from an earlier call with
    ``return_prompt_caches=True``) continues those sequences: the prompt is read after the
    cached tokens; the given caches are not changed. ``verbose`` prints progress and mlx_lm's
    statistics.

    Keyword arguments as mlx_lm's ``BatchGenerator``: ``sampler``, ``logits_processors``,
    ``prefill_step_size`` (prompt tokens per forward pass, default 512 as ``generate``),
    ``completion_batch_size`` (sequences per decode forward pass, default 8: up to 8 every
    sequence's tokens equal its ``generate`` tokens; more is faster on a GPU but no longer
    batch-invariant), ``prefill_batch_size`` (with ``prefill_step_size``, the prompt tokens
    prefilled between decode steps). Also ``seed`` (prompt ``i`` samples with seed
    ``seed + i``, as ``generate(..., seed=seed + i)``), ``stop`` (stop strings), ``kv_bits``
    and ``kv_group_size``. Sequences run ragged (no padding), so results do not depend on the
    other prompts' lengths. The GIL is released while the model runs.
    """
    op = "batch_generate"
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__len__"):
        raise TypeError(f"[{op}] prompts must be a list of prompts (token id lists or strings)")
    n = len(prompts)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, list, tuple)):
        raise TypeError(f"[{op}] max_tokens must be an int or a list of ints")
    limits = [max_tokens] * n if isinstance(max_tokens, int) else list(max_tokens)
    if len(limits) != n:
        raise ValueError(
            f"[{op}] max_tokens must have one entry per prompt: expected {n}, got {len(limits)}"
        )
    for i, m in enumerate(limits):
        if isinstance(m, bool) or not isinstance(m, int):
            raise TypeError(f"[{op}] max_tokens[{i}] must be an int, got {type(m).__name__}")
        if m <= 0:
            raise ValueError(f"[{op}] sequence {i}'s max_tokens must be > 0, got {m}")
    if prompt_caches is not None:
        prompt_caches = list(prompt_caches)
        if len(prompt_caches) != n:
            raise ValueError(
                f"[{op}] prompt_caches must have one entry per prompt: expected {n}, "
                f"got {len(prompt_caches)}"
            )
        for i, c in enumerate(prompt_caches):
            if c is not None and not isinstance(c, PromptCache):
                raise TypeError(
                    f"[{op}] prompt_caches[{i}] must be a PromptCache from an earlier "
                    f"batch_generate(..., return_prompt_caches=True) or None"
                )
    settings = _sampling_settings(op, kwargs)
    for unsupported in ("max_kv_size", "stream"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(f"[{op}] {unsupported} is not supported yet")
        kwargs.pop(unsupported, None)
    rows = kwargs.pop("completion_batch_size", 8)
    prefill_batch = kwargs.pop("prefill_batch_size", 8)
    step = kwargs.pop("prefill_step_size", 512)
    seed = kwargs.pop("seed", None)
    per_seq = {k: kwargs.pop(k) for k in ("stop", "kv_bits", "kv_group_size") if k in kwargs}
    if kwargs:
        raise TypeError(f"[{op}] unexpected keyword arguments: {sorted(kwargs)}")
    for name, v in (("completion_batch_size", rows), ("prefill_batch_size", prefill_batch),
                    ("prefill_step_size", step)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"[{op}] {name} must be a positive int, got {v!r}")
    ids = []
    for i, p in enumerate(prompts):
        try:
            ids.append(_prompt_ids(tokenizer, p))
        except (TypeError, ValueError) as e:
            raise type(e)(f"[{op}] prompt {i}: {e}") from None
        if not ids[-1]:
            raise ValueError(f"[{op}] sequence {i} has an empty prompt")

    t0 = time.perf_counter()
    gen = _lm.BatchGenerator(model, tokenizer, max_rows=rows,
                             prefill_tokens=prefill_batch * step, keep_caches=return_prompt_caches)
    for i, p in enumerate(ids):
        try:
            gen.insert(
                p, max_tokens=limits[i], **settings, **per_seq, prefill_step_size=step,
                seed=None if seed is None else seed + i, logprobs=return_logprobs,
                cache=None if prompt_caches is None else prompt_caches[i],
            )
        except ValueError as e:
            raise ValueError(f"[{op}] prompt {i}: {e}") from None
    texts = [""] * n
    tokens: List[List[int]] = [[] for _ in range(n)]
    logprobs: List[List[float]] = [[] for _ in range(n)]
    finished = 0
    if verbose:
        print(f"[batch_generate] Finished processing 0/{n} ...", end="\r")
    while len(gen):
        for uid, token, text, logprob, finish, error in gen.step():
            if error is not None:
                raise RuntimeError(f"[{op}] prompt {uid}: {error}")
            texts[uid] += text
            # mlx_lm leaves the token that ended a sequence (EOS) out of its results.
            if token is not None and finish != "stop":
                tokens[uid].append(token)
                if return_logprobs:
                    logprobs[uid].append(logprob)
            if finish is not None:
                finished += 1
                if verbose:
                    print(f"[batch_generate] Finished processing {finished}/{n} ...", end="\r")
    counters = gen.stats()
    counters.pop("decode_passes")
    stats = BatchStats(**counters, wall_time=time.perf_counter() - t0,
                       peak_memory=_get_peak_memory() / 1e9)
    caches = [gen.take_cache(i) for i in range(n)] if return_prompt_caches else None
    if verbose:
        print(f"[batch_generate] Finished processing {finished}/{n}")
        print(f"[batch_generate] Prompt: {stats.prompt_tokens} tokens, "
              f"{stats.prompt_tps:.3f} tokens-per-sec")
        print(f"[batch_generate] Generation: {stats.generation_tokens} tokens, "
              f"{stats.generation_tps:.3f} tokens-per-sec")
        print(f"[batch_generate] Peak memory: {stats.peak_memory:.3f} GB")
    return BatchResponse(
        texts, stats, caches,
        tokens if return_token_ids else None,
        logprobs if return_logprobs else None,
    )


def generate(
    model,
    tokenizer,
    prompt: Union[str, Sequence[int], _array],
    verbose: bool = False,
    **kwargs,
) -> str:
    """Generate a completion of ``prompt`` and return its text. ``verbose`` prints the text
    as it is produced and mlx_lm's statistics. Keyword arguments as ``stream_generate``."""
    if verbose:
        print("=" * 10)
    text = ""
    last = None
    for response in stream_generate(model, tokenizer, prompt, **kwargs):
        if verbose:
            print(response.text, end="", flush=True)
        text += response.text
        last = response
    if verbose:
        print()
        print("=" * 10)
        if last is None:
            print("No text generated for this prompt")
        else:
            print(f"Prompt: {last.prompt_tokens} tokens, {last.prompt_tps:.3f} tokens-per-sec")
            print(f"Generation: {last.generation_tokens} tokens, {last.generation_tps:.3f} tokens-per-sec")
            print(f"Peak memory: {last.peak_memory:.3f} GB")
    return text


def _generate_module():
    """``rmlx.lm.generate`` is the function, as in mlx_lm; ``import rmlx.lm.generate`` (or
    ``from rmlx.lm.generate import batch_generate, BatchResponse``) gives a module of the
    names mlx_lm.generate has, as mlx_lm's module of that name does."""
    import sys
    import types

    m = types.ModuleType(__name__ + ".generate", _generate_module.__doc__)
    for name in ("generate", "stream_generate", "batch_generate", "BatchResponse", "BatchStats",
                 "GenerationResponse"):
        setattr(m, name, globals()[name])
    sys.modules[m.__name__] = m


_generate_module()

