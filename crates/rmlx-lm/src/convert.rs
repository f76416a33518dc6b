//! `convert`: a Hugging Face directory (float safetensors) or a GGUF file in, an
//! mlx-community-format directory out, as `mlx_lm.convert` writes it: weights cast to the
//! dtype, then (with `quantize`) every linear and embedding weight whose last dimension divides
//! by the group size quantized with MLX's affine quantizer (`ops::quantize`, bit-exact with
//! MLX); same tensor names, shards and index (`rmlx::io::save_sharded`), `config.json` with the
//! `quantization` block and its `quantization_config` copy (other keys, `torch_dtype` included, kept as mlx_lm keeps
//! them), tokenizer files alongside. Mixture-of-experts checkpoints get mlx_lm's `sanitize`
//! (per-expert tensors stacked into `switch_mlp.*`) and its per-architecture quantization
//! choices (Qwen3-MoE's router `mlp.gate` at 8 bits, group 64, recorded per module).

use crate::error::{LmError, Result};
use crate::load::load_weights;
use crate::tokenizer::Tokenizer;
use rmlx::{ops, Array, Dtype};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// What `convert` does.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub quantize: bool,
    pub q_bits: usize,
    pub q_group_size: usize,
    /// Cast float weights to this dtype first; `None`: the config's `torch_dtype` (as mlx_lm),
    /// float16 when it names none.
    pub dtype: Option<Dtype>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            quantize: false,
            q_bits: 4,
            q_group_size: 64,
            dtype: None,
        }
    }
}

/// Tokenizer and generation files copied from an HF source directory.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
];

/// The float dtype to write: the option, else `torch_dtype` of the config, else float16.
fn target_dtype(opts: &ConvertOptions, config: &Value) -> Result<Dtype> {
    if let Some(d) = opts.dtype {
        if !d.is_float() {
            return Err(LmError::Config(format!(
                "convert --dtype must be a float type, got {d}"
            )));
        }
        return Ok(d);
    }
    Ok(
        match config
            .get("torch_dtype")
            .or_else(|| config.get("dtype"))
            .and_then(Value::as_str)
        {
            Some("bfloat16") => Dtype::BF16,
            Some("float32") => Dtype::F32,
            _ => Dtype::F16,
        },
    )
}

/// Group size and bits of an imported GGUF triple (`wq [.., P]`, `scales [.., G]`): GGUF uses
/// 32-element groups for 4/5/8 bits (Q4_*, Q5_*, Q8_0, Q4_K, Q5_K) and 16 for 2/3/6 (Q2_K,
/// Q3_K, Q6_K), which makes the pair unique.
fn gguf_quant_params(name: &str, wq: &Array, scales: &Array) -> Result<(usize, usize)> {
    let p = *wq.shape().last().unwrap_or(&0);
    let g = *scales.shape().last().unwrap_or(&0);
    if g > 0 && p.is_multiple_of(g) && [4, 5, 8].contains(&(p / g)) {
        return Ok((32, p / g));
    }
    if g > 0 && (2 * p).is_multiple_of(g) && [2, 3, 6].contains(&(2 * p / g)) {
        return Ok((16, 2 * p / g));
    }
    Err(LmError::Load(format!(
        "{name}: packed width {p} and {g} groups match no GGUF quantization (bits 2-8, groups 16/32)"
    )))
}

/// Whether mlx_lm would quantize this weight: a Linear or Embedding `.weight` (2-D or more,
/// norms are 1-D) whose last dimension divides by the group size.
fn quantizable(name: &str, a: &Array, group_size: usize) -> bool {
    name.ends_with(".weight")
        && a.ndim() >= 2
        && a.dtype().is_float()
        && !name.contains("norm")
        && a.shape()[a.ndim() - 1].is_multiple_of(group_size)
}

/// The (group size, bits) mlx_lm's `quant_predicate` of the architecture gives module `path`
/// instead of the defaults: Qwen3-MoE keeps its router at 8 bits (a 4-bit router misroutes).
fn module_override(model_type: &str, path: &str) -> Option<(usize, usize)> {
    match model_type {
        "qwen3_moe" if path.ends_with("mlp.gate") => Some((64, 8)),
        _ => None,
    }
}

/// Converts `src` (HF directory or `.gguf` file) into an MLX-format directory `out`.
pub fn convert(src: &Path, out: &Path, opts: &ConvertOptions) -> Result<()> {
    if opts.quantize {
        if ![2, 3, 4, 5, 6, 8].contains(&opts.q_bits) {
            return Err(LmError::Config(format!(
                "--q-bits must be 2, 3, 4, 5, 6 or 8, got {}",
                opts.q_bits
            )));
        }
        if ![32, 64, 128].contains(&opts.q_group_size) {
            return Err(LmError::Config(format!(
                "--q-group-size must be 32, 64 or 128, got {}",
                opts.q_group_size
            )));
        }
    }
    let is_gguf = src.is_file();
    let (mut config, mut weights) = load_weights(src)?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    crate::models::stack_moe_experts(&config, &mut weights)?;
    let dtype = target_dtype(opts, &config)?;
    let mut names: Vec<String> = weights.remaining_keys();
    names.sort();

    // 1. Dequantize GGUF triples, cast floats to the dtype.
    let mut dense: BTreeMap<String, Array> = BTreeMap::new();
    for name in &names {
        if name.ends_with(".scales") || name.ends_with(".biases") {
            continue;
        }
        let a = weights.get(name).expect("listed key").clone();
        let base = name.strip_suffix(".weight").unwrap_or(name);
        let (sk, bk) = (format!("{base}.scales"), format!("{base}.biases"));
        let a = match (weights.get(&sk), weights.get(&bk)) {
            (Some(s), Some(b)) if a.dtype() == Dtype::U32 => {
                let (gs, bits) = gguf_quant_params(name, &a, s)?;
                ops::dequantize(&a, s, b, gs, bits)?
            }
            _ => a,
        };
        let a = if a.dtype().is_float() && a.dtype() != dtype {
            ops::astype(&a, dtype)
        } else {
            a
        };
        dense.insert(name.clone(), a);
    }
    if !is_gguf && names.iter().any(|n| n.ends_with(".scales")) {
        return Err(LmError::Config(format!(
            "{} is already quantized; convert takes a float checkpoint",
            src.display()
        )));
    }

    // 2. Quantize linear and embedding weights.
    let mut tensors: BTreeMap<String, Array> = BTreeMap::new();
    let mut overrides = serde_json::Map::new();
    for (name, a) in dense {
        let base = name.strip_suffix(".weight").unwrap_or(&name).to_string();
        let special = module_override(&model_type, &base);
        let (gs, bits) = special.unwrap_or((opts.q_group_size, opts.q_bits));
        if opts.quantize && quantizable(&name, &a, gs) {
            if special.is_some() {
                overrides.insert(base.clone(), json!({"group_size": gs, "bits": bits}));
            }
            let (wq, s, b) = ops::quantize(&a, gs, bits)?;
            tensors.insert(format!("{base}.scales"), s);
            tensors.insert(format!("{base}.biases"), b);
            tensors.insert(name, wq);
        } else {
            tensors.insert(name, a);
        }
    }
    let list: Vec<(&str, &Array)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    rmlx::io::save_sharded(out, &list, rmlx::io::DEFAULT_MAX_SHARD_BYTES)
        .map_err(|e| LmError::Io(format!("writing {}: {e}", out.display())))?;

    // 3. config.json (sorted keys, as mlx_lm's save_config) and tokenizer files.
    if let Some(obj) = config.as_object_mut() {
        obj.remove("_name_or_path");
        obj.remove("quantization_config");
        if opts.quantize {
            let mut q =
                json!({"group_size": opts.q_group_size, "bits": opts.q_bits, "mode": "affine"});
            q.as_object_mut().expect("object").extend(overrides.clone());
            obj.insert("quantization".into(), q.clone());
            obj.insert("quantization_config".into(), q);
        } else {
            obj.remove("quantization");
        }
    }
    let sorted: BTreeMap<String, Value> = config
        .as_object()
        .map(|o| o.clone().into_iter().collect())
        .unwrap_or_default();
    write(
        &out.join("config.json"),
        &serde_json::to_string_pretty(&sorted).expect("json"),
    )?;
    if is_gguf {
        let g = rmlx::io::GgufFile::open(src)
            .map_err(|e| LmError::Load(format!("{}: {e}", src.display())))?;
        let tk = Tokenizer::from_gguf(&g)?;
        write(&out.join("tokenizer.json"), &tk.to_json()?)?;
        write(
            &out.join("tokenizer_config.json"),
            &serde_json::to_string_pretty(&tk.config_json()).expect("json"),
        )?;
        let gen = json!({"bos_token_id": tk.bos_token_id(), "eos_token_id": tk.eos_token_ids()});
        write(
            &out.join("generation_config.json"),
            &serde_json::to_string_pretty(&gen).expect("json"),
        )?;
    } else {
        for f in TOKENIZER_FILES {
            let p = src.join(f);
            if p.is_file() {
                std::fs::copy(&p, out.join(f)).map_err(|e| {
                    LmError::Io(format!("copying {} to {}: {e}", p.display(), out.display()))
                })?;
            }
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| LmError::Io(format!("writing {}: {e}", path.display())))
}
