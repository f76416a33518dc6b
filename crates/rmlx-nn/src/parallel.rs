//! `Parallel`: linear layers that read the same input (q/k/v, gate/up), kept apart or fused.
//!
//! Fused, their weights are concatenated along the output axis once at load, so a step runs
//! one matrix product instead of several and slices the result (zero-copy views). That saves
//! kernels per token on a GPU, where a small model's step is bound by launches, and reads the
//! input once; on the CPU the fused products are faster too (SmolLM2 Q4_1: prompt 1.13×,
//! generation 1.10×, docs/PERF.md). The CPU keeps parts apart whose weights are mapped from the
//! file: fusing would copy them, doubling their resident memory. `RMLX_FUSE=0` never fuses,
//! `RMLX_FUSE=1` always does.

use crate::error::Result;
use crate::linear::Linear;
use crate::norm::Normed;
use rmlx::{ops, Array};

#[derive(Clone, Debug)]
pub enum Parallel {
    Separate(Vec<Linear>),
    Fused { layer: Linear, sizes: Vec<usize> },
}

/// Concatenates along axis 0 and evaluates (the parts' device copies are dropped with them).
fn cat(parts: Vec<&Array>) -> Result<Array> {
    let owned: Vec<Array> = parts.into_iter().cloned().collect();
    let a = ops::concatenate(&owned, 0)?;
    a.eval()?;
    Ok(a)
}

/// One layer computing every part's outputs, when the parts agree in kind, dtype,
/// quantization and bias presence.
fn fuse(parts: &[Linear]) -> Result<Option<Linear>> {
    let all_bias = parts.iter().all(|p| p.bias().is_some());
    let no_bias = parts.iter().all(|p| p.bias().is_none());
    if !(all_bias || no_bias) {
        return Ok(None);
    }
    let bias = if all_bias {
        Some(cat(parts.iter().filter_map(Linear::bias).collect())?)
    } else {
        None
    };
    match &parts[0] {
        Linear::Dense { weight, .. } => {
            let ws: Option<Vec<&Array>> = parts
                .iter()
                .map(|p| match p {
                    Linear::Dense { weight: w, .. } if w.dtype() == weight.dtype() => Some(w),
                    _ => None,
                })
                .collect();
            let Some(ws) = ws else { return Ok(None) };
            Ok(Some(Linear::Dense {
                weight: cat(ws)?,
                bias,
            }))
        }
        Linear::Quantized { scales, q, .. } => {
            let (mut wqs, mut ss, mut bs) = (Vec::new(), Vec::new(), Vec::new());
            for p in parts {
                match p {
                    Linear::Quantized {
                        wq,
                        scales: s,
                        biases: b,
                        q: pq,
                        ..
                    } if pq == q && s.dtype() == scales.dtype() => {
                        wqs.push(wq);
                        ss.push(s);
                        bs.push(b);
                    }
                    _ => return Ok(None),
                }
            }
            Ok(Some(Linear::Quantized {
                wq: cat(wqs)?,
                scales: cat(ss)?,
                biases: cat(bs)?,
                bias,
                q: *q,
            }))
        }
    }
}

impl Parallel {
    /// The layers `parts` (same input features), fused when `fuse` is set and they agree.
    pub fn new(parts: Vec<Linear>, fuse_them: bool) -> Result<Parallel> {
        if fuse_them && parts.len() > 1 {
            if let Some(layer) = fuse(&parts)? {
                let sizes = parts.iter().map(Linear::out_features).collect();
                drop(parts);
                // the parts' memory back to the system now, not into the allocation cache:
                // else a load holds every part and every fused copy at its peak
                rmlx::clear_cache();
                return Ok(Parallel::Fused { layer, sizes });
            }
        }
        Ok(Parallel::Separate(parts))
    }

    /// The layers `parts`, fused on a GPU, and on the CPU where their weights own their memory
    /// (see the module comment). `RMLX_FUSE=0` never fuses, `RMLX_FUSE=1` always does.
    pub fn auto(parts: Vec<Linear>) -> Result<Parallel> {
        let fuse_them = match std::env::var("RMLX_FUSE").as_deref() {
            Ok("0") => false,
            Ok("1") => true,
            _ => {
                rmlx::current_device().kind == rmlx::DeviceType::Gpu
                    || parts.iter().all(owns_memory)
            }
        };
        Parallel::new(parts, fuse_them)
    }

    /// The one layer computing every part, when fused.
    pub fn fused(&self) -> Option<&Linear> {
        match self {
            Parallel::Fused { layer, .. } => Some(layer),
            Parallel::Separate(_) => None,
        }
    }

    /// `x: [..., in]` → one `[..., out_i]` per part.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        match self {
            Parallel::Separate(ls) => ls.iter().map(|l| l.forward(x)).collect(),
            Parallel::Fused { layer, sizes } => split(&layer.forward(x)?, sizes),
        }
    }

    /// [`Parallel::forward`] of a [`Normed`] input: fused, the one product takes the norm
    /// (`Linear::forward_normed`); apart, the norm is applied once for all parts.
    pub fn forward_normed(&self, x: Normed) -> Result<Vec<Array>> {
        match self {
            Parallel::Separate(_) => self.forward(&x.value()?),
            Parallel::Fused { layer, sizes } => split(&layer.forward_normed(x)?, sizes),
        }
    }
}

/// Whether none of a layer's arrays is mapped from a file (a GGUF import's converted weights
/// own theirs; safetensors tensors are mapped).
fn owns_memory(l: &Linear) -> bool {
    let arrays: Vec<&Array> = match l {
        Linear::Dense { weight, bias } => [Some(weight), bias.as_ref()]
            .into_iter()
            .flatten()
            .collect(),
        Linear::Quantized {
            wq,
            scales,
            biases,
            bias,
            ..
        } => [Some(wq), Some(scales), Some(biases), bias.as_ref()]
            .into_iter()
            .flatten()
            .collect(),
    };
    arrays
        .iter()
        .all(|a| a.data().is_ok_and(|d| !d.buffer.is_mapped()))
}

/// The fused product `y: [..., Σ sizes]` as one view per part.
fn split(y: &Array, sizes: &[usize]) -> Result<Vec<Array>> {
    let nd = y.ndim();
    let mut out = Vec::with_capacity(sizes.len());
    let mut at = 0i64;
    for &n in sizes {
        let mut start = vec![0i64; nd];
        let mut stop: Vec<i64> = y.shape().iter().map(|&d| d as i64).collect();
        start[nd - 1] = at;
        stop[nd - 1] = at + n as i64;
        out.push(ops::slice(y, &start, &stop, &vec![1; nd])?);
        at += n as i64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::QuantParams;

    fn dense(out: usize, seed: u64, bias: bool) -> Linear {
        let k = rmlx::random::key(seed);
        Linear::Dense {
            weight: rmlx::random::normal(&[out, 8], rmlx::Dtype::F32, 0.0, 1.0, Some(&k)).unwrap(),
            bias: bias.then(|| Array::from_vec((0..out).map(|i| i as f32).collect::<Vec<_>>())),
        }
    }

    fn quant(out: usize, seed: u64) -> Linear {
        let k = rmlx::random::key(seed);
        let w = rmlx::random::normal(&[out, 64], rmlx::Dtype::F32, 0.0, 1.0, Some(&k)).unwrap();
        let (wq, scales, biases) = ops::quantize(&w, 32, 4).unwrap();
        Linear::Quantized {
            wq,
            scales,
            biases,
            bias: None,
            q: QuantParams {
                group_size: 32,
                bits: 4,
            },
        }
    }

    fn same(a: &[Array], b: &[Array]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.shape(), y.shape());
            let (x, y) = (x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap());
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
            }
        }
    }

    /// The CPU fuses parts that own their memory and keeps mapped ones apart (fusing would copy
    /// them): a computed weight owns its buffer, a safetensors tensor is mapped.
    #[test]
    fn mapped_parts_are_not_fused_on_the_cpu() {
        rmlx::with_device(rmlx::Device::cpu(), || {
            assert!(owns_memory(&dense(8, 1, true)));
            // a weight written by rmlx (header padded, data aligned) is mapped when loaded
            let file = std::env::temp_dir()
                .join(format!("rmlx-mapped-{}.safetensors", std::process::id()));
            let w = dense(8, 3, false);
            let Linear::Dense { weight, .. } = &w else {
                unreachable!()
            };
            rmlx::io::save_safetensors(&file, &[("w", weight)], &Default::default()).unwrap();
            let (mut tensors, _) = rmlx::io::load_safetensors(&file).unwrap();
            let (name, w) = tensors.pop().unwrap();
            std::fs::remove_file(&file).ok();
            let mapped = Linear::Dense {
                weight: w,
                bias: None,
            };
            assert!(!owns_memory(&mapped), "{name} should be mapped");
            if std::env::var_os("RMLX_FUSE").is_none() {
                let p = Parallel::auto(vec![mapped.clone(), mapped]).unwrap();
                assert!(p.fused().is_none(), "mapped parts were fused");
                let p = Parallel::auto(vec![dense(8, 1, false), dense(4, 2, false)]).unwrap();
                assert!(
                    p.fused().is_some(),
                    "parts owning their memory were not fused"
                );
            }
        });
    }

    #[test]
    fn fused_equals_separate() {
        let x = rmlx::random::normal(&[2, 3, 8], rmlx::Dtype::F32, 0.0, 1.0, None).unwrap();
        let parts = vec![dense(8, 1, true), dense(4, 2, true), dense(4, 3, true)];
        let sep = Parallel::new(parts.clone(), false)
            .unwrap()
            .forward(&x)
            .unwrap();
        let fused = Parallel::new(parts, true).unwrap();
        assert!(matches!(fused, Parallel::Fused { .. }));
        same(&fused.forward(&x).unwrap(), &sep);

        let x = rmlx::random::normal(&[1, 64], rmlx::Dtype::F32, 0.0, 1.0, None).unwrap();
        let parts = vec![quant(32, 4), quant(64, 5)];
        let sep = Parallel::new(parts.clone(), false)
            .unwrap()
            .forward(&x)
            .unwrap();
        let fused = Parallel::new(parts, true).unwrap();
        assert!(matches!(fused, Parallel::Fused { .. }));
        same(&fused.forward(&x).unwrap(), &sep);
    }

    #[test]
    fn mismatched_parts_stay_separate() {
        let mixed = vec![dense(8, 1, true), dense(4, 2, false)];
        assert!(matches!(
            Parallel::new(mixed, true).unwrap(),
            Parallel::Separate(_)
        ));
    }
}
