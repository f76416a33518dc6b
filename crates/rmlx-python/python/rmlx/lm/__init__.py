"""mlx_lm's front door on rmlx: ``load``, ``generate``, ``stream_generate``.

``model, tokenizer = rmlx.lm.load(path)`` takes a local Hugging Face / mlx-community directory
or a ``.gguf`` file (nothing is downloaded). Sampling is configured as in mlx_lm, with
``sampler=make_sampler(...)`` and ``logits_processors=make_logits_processors(...)``.

``batch_generate`` is not here yet: it waits for batched generation in the Rust runtime.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, List, Optional, Sequence, Union

from rmlx.core import _lm
from rmlx.core import array as _array

from .sample_utils import LogitsProcessors, Sampler, make_logits_processors, make_sampler

GenerationResponse = _lm.GenerationResponse
Model = _lm.Model
Tokenizer = _lm.Tokenizer

__all__ = [
    "load",
    "generate",
    "stream_generate",
    "make_sampler",
    "make_logits_processors",
    "GenerationResponse",
    "Model",
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
        return [int(t) for t in prompt.tolist()]
    return [int(t) for t in prompt]


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
    sampler = kwargs.pop("sampler", None) or make_sampler(
        temp=kwargs.pop("temp", 0.0), top_p=kwargs.pop("top_p", 0.0),
        min_p=kwargs.pop("min_p", 0.0), top_k=kwargs.pop("top_k", 0),
    )
    if not isinstance(sampler, Sampler):
        raise TypeError(
            "[stream_generate] sampler must come from rmlx.lm.sample_utils.make_sampler "
            "(custom Python samplers are not supported)"
        )
    procs = kwargs.pop("logits_processors", None) or make_logits_processors()
    if not isinstance(procs, LogitsProcessors):
        raise TypeError(
            "[stream_generate] logits_processors must come from "
            "rmlx.lm.sample_utils.make_logits_processors"
        )
    for ignored in ("max_kv_size", "prompt_cache", "quantized_kv_start", "prompt_progress_callback"):
        if kwargs.get(ignored) is not None:
            raise ValueError(f"[stream_generate] {ignored} is not supported yet")
        kwargs.pop(ignored, None)
    allowed = {"prefill_step_size", "kv_bits", "kv_group_size", "seed", "stop"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"[stream_generate] unexpected keyword arguments: {sorted(unknown)}")
    ids = _prompt_ids(tokenizer, prompt)
    return _lm.stream_generate(
        model, tokenizer, ids, max_tokens=max_tokens,
        **sampler._settings(), **procs._settings(), **kwargs,
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
