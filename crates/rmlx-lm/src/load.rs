//! Loading a model: a Hugging Face / mlx-community directory (`config.json`, one or many
//! `*.safetensors` with their index, dense or MLX-quantized with per-module overrides) or one
//! GGUF file (config from its metadata, tensors renamed to HF names, quantized blocks imported
//! as MLX affine triples). Weights are zero-copy views of the mapped files wherever the layout
//! allows; the model is built by taking names out of a `Weights` map.

use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use crate::models::{self, Model};
use crate::tokenizer::Tokenizer;
use rmlx::io::gguf::{GgufFile, Tensor};
use rmlx::{ops, Array, Dtype};
use rmlx_nn::Weights;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Cast every float weight (and quantization scales) to this dtype; `None` keeps the file's.
    pub dtype: Option<Dtype>,
}

/// Where a model came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face / mlx-community directory.
    Dir(PathBuf),
    /// A single GGUF file.
    Gguf(PathBuf),
    /// Random weights of the shape a `config.json` describes ([`random`]).
    Random(PathBuf),
}

/// A ready model with its tokenizer and the config it was built from.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// `config.json` (for GGUF: the equivalent built from the metadata).
    pub config: Value,
    pub source: ModelSource,
}

/// Loads the model and tokenizer at `path` (a directory or a `.gguf` file).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    if is_gguf(path) {
        let gguf = open_gguf(path)?;
        let (config, weights) = gguf_weights(&gguf, path)?;
        let model = build(&config, weights, opts)?;
        // After the weights, not beside them: built on a second thread it saved ~20 ms of load
        // but its temporaries met the import's, +10 MB of peak RSS (SmolLM2: 197 -> 207 MiB).
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        return Ok(LoadedModel {
            model,
            tokenizer,
            config,
            source: ModelSource::Gguf(path.to_path_buf()),
        });
    }
    let (model, config) = load_model(path, opts)?;
    let tokenizer = Tokenizer::from_dir(path)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        config,
        source: ModelSource::Dir(path.to_path_buf()),
    })
}

/// Loads only the model (no tokenizer files needed): returns it with its config.
pub fn load_model(path: &Path, opts: &LoadOptions) -> Result<(Model, Value)> {
    let (config, weights) = load_weights(path)?;
    let model = build(&config, weights, opts)?;
    Ok((model, config))
}

/// The config and the weight map (HF names) of a directory or GGUF file, without building.
pub fn load_weights(path: &Path) -> Result<(Value, Weights)> {
    if is_gguf(path) {
        let gguf = open_gguf(path)?;
        return gguf_weights(&gguf, path);
    }
    if !path.is_dir() {
        return Err(LmError::Load(format!(
            "{}: not a model directory or .gguf file (expected a directory with config.json and *.safetensors)",
            path.display()
        )));
    }
    let config = read_config(path)?;
    let mut weights = Weights::default();
    for file in safetensors_files(path)? {
        let (tensors, _) = rmlx::io::load_safetensors(&file)
            .map_err(|e| LmError::Load(format!("{}: {e}", file.display())))?;
        for (name, a) in tensors {
            weights.insert(name, a);
        }
    }
    Ok((config, weights))
}

/// Name and bytes of each tensor a random-weight model was made of.
pub type MadeTensors = Vec<(String, usize)>;

/// A model of the architecture and shape a `config.json` describes, with random weights made
/// on the default device (for benchmarks: speed does not depend on the values). Floats are
/// `torch_dtype` (bfloat16 when absent); a `quantization` block `{group_size, bits}` makes
/// every linear and embedding affine-quantized. Returns the model, the config, and each made
/// tensor's name and bytes.
pub fn random_model(config_file: &Path, seed: u64) -> Result<(Model, Value, MadeTensors)> {
    let text = std::fs::read_to_string(config_file).map_err(|e| {
        LmError::Load(format!(
            "{}: cannot read the config ({e})",
            config_file.display()
        ))
    })?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| LmError::Config(format!("{}: invalid JSON: {e}", config_file.display())))?;
    let dtype = match config.get("torch_dtype").and_then(Value::as_str) {
        None | Some("bfloat16") => Dtype::BF16,
        Some("float16") => Dtype::F16,
        Some("float32") => Dtype::F32,
        Some(other) => {
            return Err(LmError::Config(format!(
                "{}: torch_dtype `{other}` is not one of bfloat16, float16, float32",
                config_file.display()
            )))
        }
    };
    let quant = match config.get("quantization") {
        None => None,
        Some(q) => {
            let field = |k: &str| q.get(k).and_then(Value::as_u64).map(|v| v as usize);
            let (g, b) = (
                field("group_size").unwrap_or(64),
                field("bits").unwrap_or(4),
            );
            if ![32, 64, 128].contains(&g) || ![2, 3, 4, 5, 6, 8].contains(&b) {
                return Err(LmError::Config(format!(
                    "{}: quantization needs group_size 32/64/128 and bits 2-8, got {g} and {b}",
                    config_file.display()
                )));
            }
            Some((g, b))
        }
    };
    let mut weights = Weights::random(dtype, quant, seed);
    let model = models::build(ModelConfig::from_json(&config)?, &mut weights)?;
    let made = weights
        .random_fill()
        .map(|r| r.made.clone())
        .unwrap_or_default();
    Ok((model, config, made))
}

/// [`random_model`] with an ids-only tokenizer ([`Tokenizer::ids_only`]), as a
/// [`LoadedModel`] that `generate`, `bench` and `serve` take like a real one.
pub fn random(config_file: &Path, seed: u64) -> Result<(LoadedModel, MadeTensors)> {
    let (model, config, made) = random_model(config_file, seed)?;
    let tokenizer = Tokenizer::ids_only(model.config().vocab_size)?;
    let loaded = LoadedModel {
        model,
        tokenizer,
        config,
        source: ModelSource::Random(config_file.to_path_buf()),
    };
    Ok((loaded, made))
}

/// The model of `config` from `weights`; what the model did not take is dropped, and the load's
/// temporaries (a GGUF import's converted parts, unused tensors), which the allocation cache
/// would keep resident until reused, go back to the system.
fn build(config: &Value, mut weights: Weights, opts: &LoadOptions) -> Result<Model> {
    let cfg = ModelConfig::from_json(config)?;
    if let Some(dt) = opts.dtype {
        if !dt.is_float() {
            return Err(LmError::Config(format!(
                "load dtype must be a float type, got {dt}"
            )));
        }
        weights.cast_floats(dt);
    }
    let model = models::build(cfg, &mut weights)?;
    drop(weights);
    rmlx::clear_cache();
    Ok(model)
}

fn is_gguf(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn open_gguf(path: &Path) -> Result<GgufFile> {
    GgufFile::open(path).map_err(|e| LmError::Load(format!("{}: {e}", path.display())))
}

fn read_config(dir: &Path) -> Result<Value> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).map_err(|e| {
        LmError::Load(format!(
            "{}: cannot read config.json ({e}); is this a model directory?",
            p.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| LmError::Config(format!("{}: invalid JSON: {e}", p.display())))
}

/// The weight files of a directory: those the index names, else every `*.safetensors`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    let mut files: Vec<PathBuf> = if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| LmError::Load(format!("{}: {e}", index.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LmError::Load(format!("{}: invalid JSON: {e}", index.display())))?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| LmError::Load(format!("{}: no `weight_map` object", index.display())))?;
        let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(|n| dir.join(n)).collect()
    } else {
        let rd =
            std::fs::read_dir(dir).map_err(|e| LmError::Load(format!("{}: {e}", dir.display())))?;
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        v.sort();
        v
    };
    files.retain(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("adapters"))
    });
    if files.is_empty() {
        return Err(LmError::Load(format!(
            "{}: no *.safetensors weight files found",
            dir.display()
        )));
    }
    if let Some(missing) = files.iter().find(|p| !p.is_file()) {
        return Err(LmError::Load(format!(
            "{}: weight file named by the index is missing (partial download?)",
            missing.display()
        )));
    }
    Ok(files)
}

/// `general.architecture` → (`model_type`, llama.cpp permuted Q/K rows at conversion).
fn gguf_arch(arch: &str) -> Result<(&'static str, bool)> {
    Ok(match arch {
        // convert_hf_to_gguf.py's LlamaModel permutes q/k rows for GGML's rope; Qwen and Gemma don't.
        "llama" => ("llama", true),
        "qwen2" => ("qwen2", false),
        "qwen3" => ("qwen3", false),
        "qwen3moe" => ("qwen3_moe", false),
        "gemma3" => ("gemma3_text", false),
        other => {
            return Err(LmError::Config(format!(
            "GGUF architecture `{other}` is not supported (supported: llama (and Mixtral), qwen2, qwen3, qwen3moe, gemma3)"
        )))
        }
    })
}

/// The `config.json` equivalent of a GGUF file's metadata, and its tensors under HF names.
pub fn gguf_weights(g: &GgufFile, path: &Path) -> Result<(Value, Weights)> {
    let bad = |e: rmlx::Error| LmError::Config(format!("{}: {e}", path.display()));
    let arch = g.get_str("general.architecture").map_err(bad)?.to_string();
    let (mut model_type, permuted) = gguf_arch(&arch)?;
    let u = |k: &str| g.get_u32(&format!("{arch}.{k}")).map_err(bad);
    // llama.cpp writes Mixtral as `llama` with experts
    let experts = u("expert_count").unwrap_or(0);
    if arch == "llama" && experts > 0 {
        model_type = "mixtral";
    }
    let f = |k: &str| g.get_f32(&format!("{arch}.{k}")).ok();
    let n_heads = u("attention.head_count")? as usize;
    let hidden = u("embedding_length")? as usize;
    let n_kv = g
        .get_u32(&format!("{arch}.attention.head_count_kv"))
        .map(|x| x as usize)
        .unwrap_or(n_heads);
    let head_dim = g
        .get_u32(&format!("{arch}.attention.key_length"))
        .map(|x| x as usize)
        .unwrap_or(hidden / n_heads.max(1));
    let embd = g.tensor_info("token_embd.weight").ok_or_else(|| {
        LmError::Load(format!(
            "{}: no `token_embd.weight` tensor (truncated or not a language model?)",
            path.display()
        ))
    })?;
    let vocab = embd.shape[0];
    let mut c = json!({
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": u("block_count")?,
        "intermediate_size": u("feed_forward_length")
            .or_else(|e| u("expert_feed_forward_length").map_err(|_| e))?,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "rms_norm_eps": f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
        "tie_word_embeddings": g.tensor_info("output.weight").is_none(),
    });
    if experts > 0 {
        c["num_experts"] = json!(experts);
        c["num_experts_per_tok"] = json!(u("expert_used_count")?);
        if let Ok(n) = u("expert_feed_forward_length") {
            c["moe_intermediate_size"] = json!(n);
        }
        // llama.cpp renormalises Qwen3-MoE's top-k weights unless the file says otherwise
        let norm = g
            .get_bool(&format!("{arch}.expert_weights_norm"))
            .unwrap_or(arch == "qwen3moe");
        c["norm_topk_prob"] = json!(norm);
        // a layer without a router is a dense MLP (Qwen3-MoE's `mlp_only_layers`)
        let layers = u("block_count")?;
        let dense: Vec<u32> = (0..layers)
            .filter(|i| {
                g.tensor_info(&format!("blk.{i}.ffn_gate_inp.weight"))
                    .is_none()
            })
            .collect();
        c["mlp_only_layers"] = json!(dense);
    }
    if let Some(t) = f("rope.freq_base") {
        c["rope_theta"] = json!(t);
    }
    if let Ok(n) = u("context_length") {
        c["max_position_embeddings"] = json!(n);
    }
    if let Ok(eos) = g.get_u32("tokenizer.ggml.eos_token_id") {
        c["eos_token_id"] = json!(eos);
    }
    if let (Ok(kind), Some(factor)) = (
        g.get_str(&format!("{arch}.rope.scaling.type")),
        f("rope.scaling.factor"),
    ) {
        if kind == "linear" || kind == "yarn" {
            let mut s = json!({"rope_type": kind, "factor": factor});
            if let Ok(o) = u("rope.scaling.original_context_length") {
                s["original_max_position_embeddings"] = json!(o);
            }
            c["rope_scaling"] = s;
        }
    }
    if g.tensor_info("rope_freqs.weight").is_some() {
        return Err(LmError::Config(format!(
            "{}: per-dimension rope frequency factors (`rope_freqs.weight`, Llama 3.1 scaling) are not supported yet",
            path.display()
        )));
    }
    if arch == "gemma3" {
        c["sliding_window"] = json!(u("attention.sliding_window").unwrap_or(512));
        c["sliding_window_pattern"] = json!(6); // fixed for Gemma 3 (llama.cpp hard-codes it too)
        c["rope_local_base_freq"] = json!(10000.0);
        c["query_pre_attn_scalar"] = json!(head_dim);
        if let Some(cap) = f("final_logit_softcapping") {
            c["final_logit_softcapping"] = json!(cap);
        }
    }
    let mut w = Weights::default();
    for t in g.tensors() {
        let moe_block = if model_type == "mixtral" {
            "block_sparse_moe"
        } else {
            "mlp"
        };
        let Some(name) = hf_name(&t.name, arch == "gemma3", moe_block) else {
            continue;
        };
        let tensor = g
            .load(&t.name)
            .map_err(|e| LmError::Load(format!("{}: {e}", path.display())))?;
        let mut parts: Vec<(String, Array)> = match tensor {
            Tensor::Dense(a) => vec![(format!("{name}.weight"), a)],
            Tensor::Quantized {
                wq, scales, biases, ..
            } => vec![
                (format!("{name}.weight"), wq),
                (format!("{name}.scales"), scales),
                (format!("{name}.biases"), biases),
            ],
        };
        if t.name.ends_with(".bias") {
            parts = parts
                .into_iter()
                .map(|(_, a)| (format!("{name}.bias"), a))
                .collect();
        }
        let heads = if name.ends_with("q_proj") {
            n_heads
        } else {
            n_kv
        };
        let is_qk_weight =
            t.name.ends_with(".weight") && (name.ends_with("q_proj") || name.ends_with("k_proj"));
        for (k, mut a) in parts {
            if permuted && is_qk_weight {
                a = unpermute_rows(&a, heads)?;
            }
            // llama.cpp's Gemma converter stores norms as (1 + w); the model adds the 1 itself.
            if arch == "gemma3" && k.ends_with("norm.weight") {
                a = &a - 1.0f32;
                a.eval()?;
            }
            w.insert(k, a);
        }
    }
    Ok((c, w))
}

/// GGUF tensor name → HF module path (without `.weight`/`.bias`); `None` for tensors the
/// models do not use.
fn hf_name(gguf: &str, gemma: bool, moe_block: &str) -> Option<String> {
    let base = gguf
        .strip_suffix(".weight")
        .or_else(|| gguf.strip_suffix(".bias"))?;
    Some(match base {
        "token_embd" => "model.embed_tokens".into(),
        "output_norm" => "model.norm".into(),
        "output" => "lm_head".into(),
        _ => {
            let rest = base.strip_prefix("blk.")?;
            let (i, part) = rest.split_once('.')?;
            let m = match part {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                // Llama/Qwen: the norm before the MLP; Gemma 3 names that one ffn_norm too and
                // has post-attention/post-ffw norms of its own.
                "ffn_norm" if gemma => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "post_attention_norm" => "post_attention_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                // experts stacked [E, out, in], and the router
                "ffn_gate_exps" | "ffn_up_exps" | "ffn_down_exps" | "ffn_gate_inp" => {
                    let m = match part {
                        "ffn_gate_exps" => "switch_mlp.gate_proj",
                        "ffn_up_exps" => "switch_mlp.up_proj",
                        "ffn_down_exps" => "switch_mlp.down_proj",
                        _ => "gate",
                    };
                    return Some(format!("model.layers.{i}.{moe_block}.{m}"));
                }
                _ => return None,
            };
            format!("model.layers.{i}.{m}")
        }
    })
}

/// Undoes convert_hf_to_gguf.py's `permute` of q/k rows: GGUF holds each head's rows as
/// `[head_dim/2, 2]` interleaved pairs, HF as `[2, head_dim/2]` halves. Rows of a quantized
/// triple (`wq`, `scales`, `biases`) move together, so the same permutation applies to each.
fn unpermute_rows(a: &Array, n_heads: usize) -> Result<Array> {
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    if n_heads == 0 || rows % (2 * n_heads) != 0 {
        return Err(LmError::Load(format!(
            "cannot un-permute {rows} q/k rows over {n_heads} heads"
        )));
    }
    let half = (rows / n_heads / 2) as i64;
    let x = ops::reshape(a, &[n_heads as i64, half, 2, cols as i64])?;
    let x = ops::swapaxes(&x, 1, 2)?;
    let x = ops::contiguous(&ops::reshape(&x, &[rows as i64, cols as i64])?);
    x.eval()?;
    Ok(x)
}
