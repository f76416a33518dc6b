//! `Weights`: the name → array map a model is built from. Taking a weight removes it, so what is
//! left at the end is what the checkpoint had and the model did not use. Every error names the
//! key, what was expected, what was found and the closest existing key.

use crate::error::{Error, Result};
use crate::linear::{Embedding, Linear, QuantParams};
use crate::norm::RmsNorm;
use crate::switch::SwitchLinear;
use rmlx::{ops, Array};
use std::collections::HashMap;

/// Checkpoint tensors by name (`model.layers.0.self_attn.q_proj.weight`).
#[derive(Default, Clone, Debug)]
pub struct Weights {
    map: HashMap<String, Array>,
    random: Option<RandomFill>,
}

/// Random weights made on request, for benchmarks of a shape that has no checkpoint: speed
/// does not depend on the values. Floats are normal with std 0.02 in `dtype`; with `quant`
/// `(group_size, bits)` every linear and embedding is affine-quantized (uniform random codes,
/// scales and biases that dequantize to std ~0.02), as `mlx_lm.convert -q` would leave it.
#[derive(Clone, Debug)]
pub struct RandomFill {
    pub dtype: rmlx::Dtype,
    pub quant: Option<(usize, usize)>,
    /// Every tensor made so far, with its bytes (what a benchmark's roofline counts).
    pub made: Vec<(String, usize)>,
    key: u64,
}

impl Weights {
    pub fn new(map: HashMap<String, Array>) -> Weights {
        Weights { map, random: None }
    }

    /// An empty map that makes every weight asked for (see [`RandomFill`]).
    pub fn random(dtype: rmlx::Dtype, quant: Option<(usize, usize)>, seed: u64) -> Weights {
        Weights {
            map: HashMap::new(),
            random: Some(RandomFill {
                dtype,
                quant,
                made: Vec::new(),
                key: seed,
            }),
        }
    }

    /// What a random map made (None for a checkpoint's).
    pub fn random_fill(&self) -> Option<&RandomFill> {
        self.random.as_ref()
    }

    /// A made tensor, evaluated where the default device is (so it is made on the GPU).
    fn make(&mut self, name: &str, shape: &[usize], dtype: rmlx::Dtype, std: f32) -> Result<Array> {
        let r = self.random.as_mut().expect("random map");
        r.key += 1;
        let key = rmlx::random::key(r.key);
        let a = if dtype == rmlx::Dtype::U32 {
            rmlx::random::bits(shape, Some(&key))?
        } else {
            rmlx::random::normal(shape, dtype, 0.0, std, Some(&key))?
        };
        a.eval()?;
        r.made.push((name.to_string(), a.nbytes()));
        Ok(a)
    }

    pub fn insert(&mut self, name: impl Into<String>, a: Array) {
        self.map.insert(name.into(), a);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Array> {
        self.map.get(name)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Names not taken yet, sorted.
    pub fn remaining_keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.map.keys().cloned().collect();
        k.sort();
        k
    }

    /// Removes and returns `name`; a missing key names the closest existing one.
    pub fn take(&mut self, name: &str) -> Result<Array> {
        self.map.remove(name).ok_or_else(|| {
            let hint = closest_key(name, self.map.keys().map(|s| s.as_str()))
                .map(|k| format!(" (closest existing key: `{k}`)"))
                .unwrap_or_default();
            Error::Weight(format!("missing weight `{name}`{hint}"))
        })
    }

    /// Removes `name` if present.
    pub fn take_opt(&mut self, name: &str) -> Option<Array> {
        self.map.remove(name)
    }

    /// `take` plus a shape check.
    pub fn take_shaped(&mut self, name: &str, shape: &[usize]) -> Result<Array> {
        if let (false, Some(dt)) = (self.contains(name), self.random.as_ref().map(|r| r.dtype)) {
            return self.make(name, shape, dt, 0.02);
        }
        let a = self.take(name)?;
        check_shape(name, &a, shape)?;
        Ok(a)
    }

    /// A `Linear` at `prefix` (`prefix.weight`, optional `prefix.bias`), quantized when
    /// `prefix.scales` exists; group size and bits follow from the shapes, so per-module
    /// overrides in a config need no special path.
    pub fn linear(
        &mut self,
        prefix: &str,
        in_f: usize,
        out_f: usize,
        bias: bool,
    ) -> Result<Linear> {
        let bias = if bias {
            Some(self.take_shaped(&format!("{prefix}.bias"), &[out_f])?)
        } else {
            None
        };
        match self.quantized(prefix, &[], in_f, out_f)? {
            Some((wq, scales, biases, q)) => Ok(Linear::Quantized {
                wq,
                scales,
                biases,
                bias,
                q,
            }),
            None => Ok(Linear::Dense {
                weight: self.take_shaped(&format!("{prefix}.weight"), &[out_f, in_f])?,
                bias,
            }),
        }
    }

    /// An `Embedding` `[vocab, dim]` at `prefix`, quantized when `prefix.scales` exists.
    pub fn embedding(&mut self, prefix: &str, vocab: usize, dim: usize) -> Result<Embedding> {
        match self.quantized(prefix, &[], dim, vocab)? {
            Some((wq, scales, biases, q)) => Ok(Embedding::Quantized {
                wq,
                scales,
                biases,
                q,
            }),
            None => Ok(Embedding::Dense {
                weight: self.take_shaped(&format!("{prefix}.weight"), &[vocab, dim])?,
            }),
        }
    }

    /// An `RmsNorm` of `dim` at `prefix.weight`.
    pub fn rms_norm(&mut self, prefix: &str, dim: usize, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: self.take_shaped(&format!("{prefix}.weight"), &[dim])?,
            eps,
        })
    }

    /// Gemma's `x / rms(x) * (1 + weight)`: the `1 +` is applied once here, in the weight's
    /// dtype (as mlx-lm computes it on every call).
    pub fn rms_norm_plus_one(&mut self, prefix: &str, dim: usize, eps: f32) -> Result<RmsNorm> {
        let w = self.take_shaped(&format!("{prefix}.weight"), &[dim])?;
        let weight = &w + 1.0f32;
        weight.eval()?;
        Ok(RmsNorm { weight, eps })
    }

    /// A `SwitchLinear` of `experts` stacked `[out, in]` matrices at `prefix`
    /// (`prefix.weight` `[experts, out, in]`, optional `prefix.bias` `[experts, out]`),
    /// quantized when `prefix.scales` exists.
    pub fn switch_linear(
        &mut self,
        prefix: &str,
        experts: usize,
        in_f: usize,
        out_f: usize,
        bias: bool,
    ) -> Result<SwitchLinear> {
        let bias = if bias {
            Some(self.take_shaped(&format!("{prefix}.bias"), &[experts, out_f])?)
        } else {
            None
        };
        match self.quantized(prefix, &[experts], in_f, out_f)? {
            Some((wq, scales, biases, q)) => Ok(SwitchLinear::Quantized {
                wq,
                scales,
                biases,
                bias,
                q,
            }),
            None => Ok(SwitchLinear::Dense {
                weight: self.take_shaped(&format!("{prefix}.weight"), &[experts, out_f, in_f])?,
                bias,
            }),
        }
    }

    /// Quantized parts of a `[lead.., out, in]` matrix (stack) at `prefix`, if quantized.
    fn quantized(
        &mut self,
        prefix: &str,
        lead: &[usize],
        in_f: usize,
        out_f: usize,
    ) -> Result<Option<(Array, Array, Array, QuantParams)>> {
        let sname = format!("{prefix}.scales");
        if let (false, Some(r)) = (self.contains(&sname), self.random.as_ref()) {
            let (dt, Some((group_size, bits))) = (r.dtype, r.quant) else {
                return Ok(None);
            };
            // a stack keeps its leading axes (a mixture's experts: each one its own matrix)
            let shape = |last: usize| [lead, &[out_f, last]].concat();
            let wq = self.make(
                &format!("{prefix}.weight"),
                &shape(in_f * bits / 32),
                rmlx::Dtype::U32,
                0.0,
            )?;
            // codes uniform in [0, 2^bits): scale so the weights have std ~0.02, centred
            let levels = ((1u32 << bits) - 1) as f32;
            let scale = 0.02 * 3f32.sqrt() * 2.0 / levels;
            let g = shape(in_f / group_size);
            let scales = &self.make(&sname, &g, dt, 0.1 * scale)? + scale;
            let biases = &self.make(&format!("{prefix}.biases"), &g, dt, 0.1 * scale)?
                - levels / 2.0 * scale;
            rmlx::eval(&[scales.clone(), biases.clone()])?;
            return Ok(Some((wq, scales, biases, QuantParams { group_size, bits })));
        }
        if !self.contains(&sname) {
            return Ok(None);
        }
        let wname = format!("{prefix}.weight");
        let wq = self.take(&wname)?;
        let scales = self.take(&sname)?;
        let biases = self.take(&format!("{prefix}.biases"))?;
        let lead_s: String = lead.iter().map(|d| format!("{d}, ")).collect();
        let bad = |what: String| {
            Error::Weight(format!(
                "quantized `{prefix}` for [{lead_s}{out_f}, {in_f}]: {what}"
            ))
        };
        let nl = lead.len();
        let shaped =
            |a: &Array| a.ndim() == nl + 2 && a.shape()[..nl] == *lead && a.shape()[nl] == out_f;
        if !shaped(&wq) || !shaped(&scales) {
            return Err(bad(format!(
                "expected `{wname}` [{lead_s}{out_f}, packed] and `{sname}` [{lead_s}{out_f}, groups], found {:?} and {:?}",
                wq.shape(),
                scales.shape()
            )));
        }
        if wq.dtype() != rmlx::Dtype::U32 {
            return Err(bad(format!(
                "`{wname}` must be uint32 packed words, found {}",
                wq.dtype()
            )));
        }
        let (packed, groups) = (wq.shape()[nl + 1], scales.shape()[nl + 1]);
        let bits = packed * 32 / in_f.max(1);
        let group_size = in_f / groups.max(1);
        if packed * 32 != in_f * bits
            || groups * group_size != in_f
            || ![2, 3, 4, 5, 6, 8].contains(&bits)
        {
            return Err(bad(format!(
                "shapes {:?} / {:?} do not match any bits (2-8) and group size for {in_f} inputs",
                wq.shape(),
                scales.shape()
            )));
        }
        if biases.shape() != scales.shape() {
            return Err(bad(format!(
                "biases {:?} differ from scales {:?}",
                biases.shape(),
                scales.shape()
            )));
        }
        Ok(Some((wq, scales, biases, QuantParams { group_size, bits })))
    }

    /// Casts every float weight that is not already `dtype` (quantized scales included); packed
    /// words and integer tensors stay as they are.
    pub fn cast_floats(&mut self, dtype: rmlx::Dtype) {
        for a in self.map.values_mut() {
            if a.dtype().is_float() && a.dtype() != dtype {
                *a = ops::astype(a, dtype);
            }
        }
    }
}

fn check_shape(name: &str, a: &Array, shape: &[usize]) -> Result<()> {
    if a.shape() != shape {
        return Err(Error::Weight(format!(
            "weight `{name}` has shape {:?}, expected {:?}",
            a.shape(),
            shape
        )));
    }
    Ok(())
}

/// The key nearest to `name` by edit distance (ties: the first in sorted order), if any.
pub fn closest_key<'a>(name: &str, keys: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for k in keys {
        let d = edit_distance(name.as_bytes(), k.as_bytes());
        if best.is_none_or(|(bd, bk)| d < bd || (d == bd && k < bk)) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k.to_string())
}

fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_key_finds_the_typo() {
        let keys = [
            "model.layers.0.self_attn.q_proj.weight",
            "model.norm.weight",
            "lm_head.weight",
        ];
        assert_eq!(
            closest_key("model.layers.0.self_attn.q_prj.weight", keys.into_iter()).as_deref(),
            Some("model.layers.0.self_attn.q_proj.weight")
        );
        assert_eq!(closest_key("x", std::iter::empty()), None);
    }

    /// A random quantized expert stack has one matrix per expert (it once had one for all,
    /// which made MoE benchmarks read the same small matrix for every expert).
    #[test]
    fn random_expert_stacks_keep_their_expert_axis() {
        let mut w = Weights::random(rmlx::Dtype::F32, Some((32, 4)), 7);
        let s = w
            .switch_linear("mlp.switch_mlp.up_proj", 4, 64, 16, false)
            .unwrap();
        match s {
            SwitchLinear::Quantized {
                wq, scales, biases, ..
            } => {
                assert_eq!(wq.shape(), &[4, 16, 8]);
                assert_eq!(scales.shape(), &[4, 16, 2]);
                assert_eq!(biases.shape(), &[4, 16, 2]);
            }
            SwitchLinear::Dense { .. } => panic!("a quantized random map made a dense stack"),
        }
        let mut w = Weights::random(rmlx::Dtype::F32, None, 7);
        match w
            .switch_linear("mlp.switch_mlp.up_proj", 4, 64, 16, false)
            .unwrap()
        {
            SwitchLinear::Dense { weight, .. } => assert_eq!(weight.shape(), &[4, 16, 64]),
            SwitchLinear::Quantized { .. } => panic!("a float random map made a quantized stack"),
        }
    }

    #[test]
    fn missing_and_misshapen_weights_are_named() {
        let mut w = Weights::default();
        w.insert("model.norm.weight", Array::from_vec(vec![1.0f32; 4]));
        let e = w.take("model.nrm.weight").unwrap_err().to_string();
        assert!(
            e.contains("model.nrm.weight")
                && e.contains("closest existing key: `model.norm.weight`"),
            "{e}"
        );
        let e = w.rms_norm("model.norm", 8, 1e-5).unwrap_err().to_string();
        assert!(e.contains("[4]") && e.contains("[8]"), "{e}");
    }
}
