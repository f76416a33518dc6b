"""mlx_lm.sample_utils' constructors. They return settings objects that the Rust sampler
runs (on the host, per token); arbitrary Python callables are not accepted."""

from __future__ import annotations

from typing import Dict, List, Optional


class Sampler:
    """Sampling settings made by ``make_sampler``; pass as ``sampler=`` to generation."""

    def __init__(self, temp: float, top_p: float, min_p: float, min_tokens_to_keep: int, top_k: int):
        self.temp = float(temp)
        self.top_p = float(top_p)
        self.min_p = float(min_p)
        self.min_tokens_to_keep = int(min_tokens_to_keep)
        self.top_k = int(top_k)

    def _settings(self) -> dict:
        # mlx_lm: top_p of 0 (or 1) means off; the Rust sampler uses 1.0 for off.
        top_p = self.top_p if 0.0 < self.top_p < 1.0 else 1.0
        return dict(temp=self.temp, top_p=top_p, min_p=self.min_p,
                    min_tokens_to_keep=self.min_tokens_to_keep, top_k=self.top_k)

    def __repr__(self) -> str:
        return (f"Sampler(temp={self.temp}, top_p={self.top_p}, min_p={self.min_p}, "
                f"min_tokens_to_keep={self.min_tokens_to_keep}, top_k={self.top_k})")


def make_sampler(
    temp: float = 0.0,
    top_p: float = 0.0,
    min_p: float = 0.0,
    min_tokens_to_keep: int = 1,
    top_k: int = 0,
    xtc_probability: float = 0.0,
    xtc_threshold: float = 0.0,
    xtc_special_tokens: Optional[List[int]] = None,
) -> Sampler:
    """A sampler: greedy when ``temp`` is 0, else a draw at temperature ``temp`` after the
    top-p, min-p and top-k filters (each off at its default). XTC is not supported."""
    if xtc_probability > 0.0:
        raise ValueError("[make_sampler] XTC sampling is not supported yet")
    if temp < 0:
        raise ValueError(f"[make_sampler] temp must be >= 0, got {temp}")
    return Sampler(temp, top_p, min_p, min_tokens_to_keep, top_k)


class LogitsProcessors:
    """Logit bias and repetition penalty made by ``make_logits_processors``."""

    def __init__(self, logit_bias: Optional[Dict[int, float]], repetition_penalty: Optional[float],
                 repetition_context_size: int):
        self.logit_bias = dict(logit_bias or {})
        self.repetition_penalty = repetition_penalty
        self.repetition_context_size = int(repetition_context_size)

    def _settings(self) -> dict:
        bias = [(int(k), float(v)) for k, v in self.logit_bias.items()] or None
        return dict(logit_bias=bias, repetition_penalty=self.repetition_penalty,
                    repetition_context_size=self.repetition_context_size)


def make_logits_processors(
    logit_bias: Optional[Dict[int, float]] = None,
    repetition_penalty: Optional[float] = None,
    repetition_context_size: Optional[int] = 20,
) -> LogitsProcessors:
    """Logits processors: ``logit_bias`` (token id → added value) and a repetition penalty
    over the last ``repetition_context_size`` tokens."""
    return LogitsProcessors(logit_bias, repetition_penalty, repetition_context_size or 20)
