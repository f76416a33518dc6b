//! Sampling the next token from logits, with mlx-lm's semantics (`sample_utils.py`,
//! `generate_step`):
//! 1. logits processors: logit bias (added), then repetition penalty over the last
//!    `repetition_context_size` tokens of each row's history (positive logits divided, negative
//!    multiplied);
//! 2. `logprobs = logits - logsumexp(logits)` (returned to the caller);
//! 3. `temp == 0`: argmax; else the filters top-p, min-p, top-k on the logprobs, then a draw
//!    from `softmax(logprobs / temp)` over what survives.
//!
//! Everything runs on the host over `to_vec` data, row by row: one row of 49k logits costs
//! well under a millisecond, avoids a full sort (top-p looks only at a growing sorted prefix),
//! and needs no device ops beyond the readback the caller must wait for anyway. The random
//! draws come from a host threefry-2x32 stream per sampler (the generator MLX's `random` uses),
//! keyed by the seed and advanced once per `sample` call, so a seed reproduces the same tokens
//! independent of any global random state.

use crate::error::{LmError, Result};
use rmlx::Array;
use std::cmp::Ordering;

/// How to pick tokens. `Default` is greedy (`temp == 0`) with every filter off.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerSettings {
    /// Softmax temperature; 0 means argmax.
    pub temp: f32,
    /// Nucleus sampling: keep the smallest set of top tokens whose mass reaches `top_p`
    /// (off unless `0 < top_p < 1`).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p * p_max` (0 = off).
    pub min_p: f32,
    /// Tokens min-p always keeps (at least 1).
    pub min_tokens_to_keep: usize,
    /// Sign-aware multiplicative penalty for recently seen tokens (None or 0 = off).
    pub repetition_penalty: Option<f32>,
    /// How many of the last history tokens the repetition penalty looks at.
    pub repetition_context_size: usize,
    /// `(token, bias)` added to the logits before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of this sampler's random stream (None = seeded from the OS).
    pub seed: Option<u64>,
}

impl SamplerSettings {
    /// Whether the token is the argmax of the logits plus the logit bias: temperature 0 and no
    /// repetition penalty (the filters keep the top token, which greedy picks anyway).
    pub fn is_greedy(&self) -> bool {
        self.temp == 0.0 && self.repetition_penalty.is_none_or(|p| p == 0.0)
    }
}

impl Default for SamplerSettings {
    fn default() -> Self {
        SamplerSettings {
            temp: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            min_tokens_to_keep: 1,
            repetition_penalty: None,
            repetition_context_size: 20,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

/// A sampler: settings plus its own random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    settings: SamplerSettings,
    key: [u32; 2],
}

fn bad(msg: impl Into<String>) -> LmError {
    LmError::Generate(format!("[sample] {}", msg.into()))
}

impl Sampler {
    /// A sampler for `settings`; the settings are checked on each `sample` call.
    pub fn new(settings: SamplerSettings) -> Sampler {
        let seed = settings.seed.unwrap_or_else(os_seed);
        // MLX's `random.key(seed)`: the high and low 32 bits.
        Sampler {
            settings,
            key: [(seed >> 32) as u32, seed as u32],
        }
    }

    pub fn settings(&self) -> &SamplerSettings {
        &self.settings
    }

    /// Checks the settings against a vocabulary of `vocab` tokens (`sample` does it too).
    pub fn validate(&self, vocab: usize) -> Result<()> {
        let s = &self.settings;
        if !(s.temp.is_finite() && s.temp >= 0.0) {
            return Err(bad(format!(
                "temperature must be a finite number >= 0, got {}",
                s.temp
            )));
        }
        if !(0.0..=1.0).contains(&s.top_p) {
            return Err(bad(format!("top_p must be in [0, 1], got {}", s.top_p)));
        }
        if !(0.0..=1.0).contains(&s.min_p) {
            return Err(bad(format!("min_p must be in [0, 1], got {}", s.min_p)));
        }
        if s.min_tokens_to_keep == 0 {
            return Err(bad("min_tokens_to_keep must be at least 1"));
        }
        if let Some(p) = s.repetition_penalty {
            if !(p.is_finite() && p >= 0.0) {
                return Err(bad(format!(
                    "repetition_penalty must be a finite number >= 0, got {p}"
                )));
            }
        }
        if let Some(&(t, _)) = s.logit_bias.iter().find(|(t, _)| *t as usize >= vocab) {
            return Err(bad(format!(
                "logit_bias token {t} is outside the vocabulary of {vocab}"
            )));
        }
        Ok(())
    }

    /// Samples one token per row of `logits` (`[B, V]`, any float dtype; `[V]` is one row).
    /// `history[b]` holds row `b`'s tokens so far (for the repetition penalty; may be empty,
    /// or `history` itself empty). Returns the tokens and the log-probabilities `[B, V]` (f32)
    /// of the processed logits.
    pub fn sample(&mut self, logits: &Array, history: &[Vec<u32>]) -> Result<(Vec<u32>, Array)> {
        if logits.ndim() == 0 || logits.shape()[logits.ndim() - 1] == 0 {
            return Err(bad(format!(
                "logits must be [B, V] with V > 0, got {:?}",
                logits.shape()
            )));
        }
        let vocab = logits.shape()[logits.ndim() - 1];
        let rows = logits.size() / vocab;
        self.validate(vocab)?;
        if !history.is_empty() && history.len() != rows {
            return Err(bad(format!(
                "history has {} rows but the logits have {rows}",
                history.len()
            )));
        }
        let mut data = logits.to_vec::<f32>()?;
        // Advance the stream once per call: the same seed gives the same draws step by step.
        let step_key = threefry2x32(self.key, [0, 1]);
        self.key = threefry2x32(self.key, [0, 0]);
        let mut tokens = Vec::with_capacity(rows);
        for (r, row) in data.chunks_mut(vocab).enumerate() {
            self.process(row, history.get(r).map(Vec::as_slice).unwrap_or(&[]));
            log_softmax_in_place(row).ok_or_else(|| bad(format!("row {r} has no finite logit")))?;
            let tok = if self.settings.temp == 0.0 {
                argmax(row)
            } else {
                let bits = threefry2x32(step_key, [r as u32, ((r as u64) >> 32) as u32]);
                let u =
                    ((bits[0] as u64) << 21 ^ (bits[1] as u64 >> 11)) as f64 / (1u64 << 53) as f64;
                self.draw(row, u)
            };
            tokens.push(tok as u32);
        }
        let logprobs = Array::from_slice(&data, logits.shape())?;
        Ok((tokens, logprobs))
    }

    /// Logit bias, then the repetition penalty (each distinct recent token once).
    fn process(&self, row: &mut [f32], history: &[u32]) {
        let s = &self.settings;
        for &(t, b) in &s.logit_bias {
            row[t as usize] += b;
        }
        if let Some(p) = s.repetition_penalty.filter(|&p| p != 0.0) {
            let ctx = &history[history.len().saturating_sub(s.repetition_context_size)..];
            let mut seen: Vec<u32> = ctx
                .iter()
                .copied()
                .filter(|&t| (t as usize) < row.len())
                .collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                let x = &mut row[t as usize];
                *x = if *x < 0.0 { *x * p } else { *x / p };
            }
        }
    }

    /// Filters the logprobs row (top-p, min-p, top-k: each keeps a top prefix of the tokens,
    /// so together they keep the shortest) and draws with temperature, `u` uniform in [0, 1).
    fn draw(&self, lp: &[f32], u: f64) -> usize {
        let s = &self.settings;
        let v = lp.len();
        let max = lp[argmax(lp)];
        let mut keep = v;
        if s.top_k > 0 {
            keep = keep.min(s.top_k);
        }
        if s.min_p > 0.0 {
            // min-p scales by the top probability: keep lp >= max + ln(min_p).
            let thr = max + s.min_p.ln();
            let n = lp.iter().filter(|&&x| x >= thr).count();
            keep = keep.min(n.max(s.min_tokens_to_keep));
        }
        let mut order: Vec<u32> = Vec::new();
        if s.top_p > 0.0 && s.top_p < 1.0 {
            // mlx-lm: drop a token when the mass of the tokens above it reaches top_p * total;
            // ties with the last kept token stay. Grow a sorted prefix until that point.
            let total: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
            let target = s.top_p as f64 * total;
            let mut m = keep.min(256);
            loop {
                order = sorted_prefix(lp, m);
                let mut mass = 0.0f64;
                let cut = order.iter().position(|&i| {
                    let above = mass;
                    mass += (lp[i as usize] as f64).exp();
                    above >= target
                });
                if let Some(mut n) = cut {
                    let thr = lp[order[n - 1] as usize];
                    while n < order.len() && lp[order[n] as usize] >= thr {
                        n += 1;
                    }
                    keep = keep.min(n);
                    break;
                }
                if m == keep {
                    break;
                }
                m = (m * 4).min(keep);
            }
        }
        if keep < v && order.len() < keep {
            order = sorted_prefix(lp, keep);
        }
        let inv_t = 1.0 / s.temp as f64;
        let weight = |i: usize| (((lp[i] - max) as f64) * inv_t).exp();
        if keep >= v {
            pick((0..v).map(|i| (i, weight(i))), u)
        } else {
            pick(
                order[..keep]
                    .iter()
                    .map(|&i| (i as usize, weight(i as usize))),
                u,
            )
        }
    }
}

/// Inverse-CDF draw over `(token, weight)` pairs with `u` in [0, 1).
fn pick(items: impl Iterator<Item = (usize, f64)> + Clone, u: f64) -> usize {
    let total: f64 = items.clone().map(|(_, w)| w).sum();
    let target = u * total;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, w) in items {
        if w <= 0.0 {
            continue;
        }
        acc += w;
        last = i;
        if acc > target {
            return i;
        }
    }
    last
}

/// Descending by value, ties by index (so the order is deterministic).
fn desc(lp: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b))
}

/// The indices of the `m` largest values, sorted descending (O(V + m log m)).
fn sorted_prefix(lp: &[f32], m: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..lp.len() as u32).collect();
    let m = m.clamp(1, lp.len());
    if m < idx.len() {
        idx.select_nth_unstable_by(m - 1, desc(lp));
        idx.truncate(m);
    }
    idx.sort_unstable_by(desc(lp));
    idx
}

/// First index of the largest value (NaN counts as -inf).
fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    let mut bv = f32::NEG_INFINITY;
    for (i, &v) in x.iter().enumerate() {
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best
}

/// `x - logsumexp(x)` in place (NaN treated as -inf); None when no value is finite.
fn log_softmax_in_place(x: &mut [f32]) -> Option<()> {
    for v in x.iter_mut() {
        if v.is_nan() {
            *v = f32::NEG_INFINITY;
        }
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let sum: f32 = x.iter().map(|&v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    x.iter_mut().for_each(|v| *v -= lse);
    Some(())
}

/// Threefry-2x32 with 20 rounds (Salmon et al. 2011; the generator of MLX's and JAX's keys).
fn threefry2x32(key: [u32; 2], ctr: [u32; 2]) -> [u32; 2] {
    const ROT: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];
    let ks = [key[0], key[1], key[0] ^ key[1] ^ 0x1BD1_1BDA];
    let mut x = [ctr[0].wrapping_add(ks[0]), ctr[1].wrapping_add(ks[1])];
    for block in 0..5usize {
        for &r in &ROT[block % 2] {
            x[0] = x[0].wrapping_add(x[1]);
            x[1] = x[1].rotate_left(r) ^ x[0];
        }
        let s = block + 1;
        x[0] = x[0].wrapping_add(ks[s % 3]);
        x[1] = x[1].wrapping_add(ks[(s + 1) % 3]).wrapping_add(s as u32);
    }
    x
}

/// A seed from the OS's per-process hash randomness and the clock.
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threefry_known_answer() {
        // Random123's known-answer vectors for threefry2x32_20.
        assert_eq!(threefry2x32([0, 0], [0, 0]), [0x6b20_0159, 0x99ba_4efe]);
        assert_eq!(
            threefry2x32([u32::MAX, u32::MAX], [u32::MAX, u32::MAX]),
            [0x1cb9_96fc, 0xbb00_2be7]
        );
    }

    #[test]
    fn top_p_prefix_matches_full_sort() {
        let lp: Vec<f32> = (0..1000)
            .map(|i| -((i * 7919 % 1000) as f32) / 50.0)
            .collect();
        let p = sorted_prefix(&lp, 1000);
        assert_eq!(&sorted_prefix(&lp, 10)[..], &p[..10]);
        assert!(p.windows(2).all(|w| lp[w[0] as usize] >= lp[w[1] as usize]));
    }
}
