//! Prefix caching: the KV caches of finished sequences, keyed by the tokens they hold, so a
//! new prompt that starts the same way (a shared system prompt, the earlier turns of a
//! conversation) skips recomputing that prefix. A small LRU bounded in bytes; a hit hands out
//! a copy trimmed to the shared prefix (arrays are immutable, so the entry stays valid: the
//! first write to a shared buffer copies it).
//!
//! Reuse must not change what the model computes beyond rounding: a fresh prefill runs every
//! prompt token of a prompt longer than `DECODE_FAMILY_ROWS` through the prefill kernels, while
//! decode steps and calls of at most that many rows may take the int8 decode kernels (a different
//! approximation, enough to change a greedy continuation after a few tokens on a 4-bit model).
//! So an entry hands out only its prefilled tokens, and a hit leaves more than
//! `DECODE_FAMILY_ROWS` prompt tokens to compute.

use crate::cache::KvCache;
use rmlx::ops::quantized::DECODE_FAMILY_ROWS;

struct Entry {
    tokens: Vec<u32>,
    /// Leading tokens whose keys/values a prefill computed (reusable).
    prefilled: usize,
    caches: Vec<KvCache>,
    bytes: usize,
    last_used: u64,
}

/// An LRU of cached prefixes, at most `max_bytes` of cache buffers.
pub struct PrefixCache {
    entries: Vec<Entry>,
    max_bytes: usize,
    clock: u64,
    /// Lookups that reused at least one token, and tokens reused in all.
    pub hits: usize,
    pub reused_tokens: usize,
}

/// Entries beyond this many are evicted even when bytes allow (lookups scan every entry).
const MAX_ENTRIES: usize = 64;

impl PrefixCache {
    pub fn new(max_bytes: usize) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            max_bytes,
            clock: 0,
            hits: 0,
            reused_tokens: 0,
        }
    }

    /// Bytes held by the cached entries.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Caches holding the longest reusable cached prefix of `prompt` and its length. More than
    /// `DECODE_FAMILY_ROWS` prompt tokens are always left to compute (the last one's logits start
    /// the generation; see the module's note). None when nothing useful is cached.
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<(Vec<KvCache>, usize)> {
        let (best, n) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let common = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                let keep = prompt.len().saturating_sub(DECODE_FAMILY_ROWS + 1);
                (i, common.min(e.prefilled).min(keep))
            })
            .max_by_key(|&(_, n)| n)?;
        if n == 0 {
            return None;
        }
        self.clock += 1;
        let e = &mut self.entries[best];
        e.last_used = self.clock;
        let mut caches = e.caches.clone();
        for c in &mut caches {
            let drop = c.offset() - n.min(c.offset());
            if c.offset() < n || c.trim(drop) != drop {
                return None; // a rotating cache that wrapped cannot go back
            }
        }
        self.hits += 1;
        self.reused_tokens += n;
        Some((caches, n))
    }

    /// Keeps `caches` (holding exactly `tokens`, of which the first `prefilled` came from a
    /// prefill) for later prompts; evicts least recently used entries beyond the byte budget.
    /// An entry that is a prefix of the new one, with no more reusable tokens, goes.
    pub fn insert(&mut self, tokens: Vec<u32>, caches: Vec<KvCache>, prefilled: usize) {
        let bytes: usize = caches.iter().map(KvCache::nbytes).sum();
        let prefilled = prefilled.min(tokens.len());
        if bytes > self.max_bytes || prefilled == 0 {
            return;
        }
        self.entries.retain(|e| {
            !(e.tokens.len() <= tokens.len()
                && e.prefilled <= prefilled
                && tokens.starts_with(&e.tokens))
        });
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            prefilled,
            caches,
            bytes,
            last_used: self.clock,
        });
        self.evict_to(self.max_bytes);
    }

    /// Evicts least recently used entries until at most `bytes` remain; returns bytes freed.
    pub fn evict_to(&mut self, bytes: usize) -> usize {
        let mut freed = 0;
        while !self.entries.is_empty() && (self.bytes() > bytes || self.entries.len() > MAX_ENTRIES)
        {
            let (i, _) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .expect("not empty");
            freed += self.entries.swap_remove(i).bytes;
        }
        freed
    }
}
