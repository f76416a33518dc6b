//! Perplexity of a model on a token sequence, as `rmlx perplexity` and llama.cpp's comparison
//! compute it: the tokens are cut into non-overlapping windows of `context` tokens, each window
//! runs from an empty cache, and every token after the first of a window is scored.

use crate::error::{LmError, Result};
use crate::models::LanguageModel;
use rmlx::Array;

/// Running negative log-likelihood over scored tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NllSum {
    pub nll: f64,
    pub count: usize,
}

impl NllSum {
    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.count.max(1) as f64).exp()
    }
}

/// Adds `-log p(targets[i] | ...)` for each row `i` of `logits` (`[L, V]` row-major, f32).
/// The log-softmax is computed in f64 for stability.
pub fn score_rows(logits: &[f32], vocab: usize, targets: &[u32], acc: &mut NllSum) -> Result<()> {
    if logits.len() != vocab * targets.len() {
        return Err(LmError::Generate(format!(
            "perplexity: {} logits for {} targets of a {vocab}-token vocabulary",
            logits.len(),
            targets.len()
        )));
    }
    for (row, &t) in logits.chunks_exact(vocab).zip(targets) {
        let t = t as usize;
        if t >= vocab {
            return Err(LmError::Generate(format!(
                "perplexity: token id {t} outside the vocabulary of {vocab}"
            )));
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        acc.nll += lse - row[t] as f64;
        acc.count += 1;
    }
    Ok(())
}

/// Per-window NLL sums, calling `on_window(done, total)` after each window (progress bars).
pub fn perplexity_with_progress(
    model: &dyn LanguageModel,
    tokens: &[u32],
    context: usize,
    mut on_window: impl FnMut(usize, usize),
) -> Result<NllSum> {
    if context < 2 {
        return Err(LmError::Generate(format!(
            "perplexity: --context must be at least 2, got {context}"
        )));
    }
    if tokens.len() < 2 {
        return Err(LmError::Generate(format!(
            "perplexity: the text has {} token(s); at least 2 are needed",
            tokens.len()
        )));
    }
    // A trailing window of one token scores nothing: drop it.
    let windows: Vec<&[u32]> = tokens.chunks(context).filter(|w| w.len() >= 2).collect();
    let mut acc = NllSum::default();
    for (i, w) in windows.iter().enumerate() {
        let mut caches = model.make_caches();
        let input = Array::from_slice(w, &[1, w.len()])?;
        let logits = model.forward(&input, &mut caches)?; // [1, L, V]
        let shape = logits.shape().to_vec();
        if shape.len() != 3 || shape[1] != w.len() {
            return Err(LmError::Generate(format!(
                "perplexity: model returned logits of shape {shape:?}"
            )));
        }
        let vocab = shape[2];
        // Rows 0..L-1 predict tokens 1..L.
        let rows = rmlx::ops::slice(
            &logits,
            &[0, 0, 0],
            &[1, w.len() as i64 - 1, vocab as i64],
            &[1, 1, 1],
        )?;
        let rows = rows.to_vec::<f32>()?;
        score_rows(&rows, vocab, &w[1..], &mut acc)?;
        on_window(i + 1, windows.len());
    }
    Ok(acc)
}

/// The perplexity of `model` on `tokens` with non-overlapping windows of `context` tokens.
pub fn perplexity(model: &dyn LanguageModel, tokens: &[u32], context: usize) -> Result<f64> {
    Ok(perplexity_with_progress(model, tokens, context, |_, _| {})?.perplexity())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_vocab_size() {
        let mut acc = NllSum::default();
        score_rows(&[0.0; 8], 4, &[1, 3], &mut acc).unwrap();
        assert!((acc.perplexity() - 4.0).abs() < 1e-12);
    }

    #[test]
    fn confident_and_bad_inputs() {
        let mut acc = NllSum::default();
        score_rows(&[0.0, 100.0, 0.0], 3, &[1], &mut acc).unwrap();
        assert!(acc.perplexity() < 1.0 + 1e-6);
        assert!(score_rows(&[0.0; 3], 3, &[5], &mut acc).is_err());
        assert!(score_rows(&[0.0; 4], 3, &[0], &mut acc).is_err());
    }
}
