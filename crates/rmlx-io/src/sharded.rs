//! Sharded safetensors in the Hugging Face / mlx-lm layout: `model.safetensors` (one shard) or
//! `model-0000i-of-0000n.safetensors`, plus `model.safetensors.index.json` mapping each tensor
//! to its shard.

use crate::safetensors::{save_safetensors, Metadata};
use rmlx_core::{Array, Error, Result};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// mlx-lm's default shard size (5 GiB).
pub const DEFAULT_MAX_SHARD_BYTES: usize = 5 << 30;

/// Writes `tensors` into `dir` as safetensors shards of at most `max_shard_bytes` each (a tensor
/// larger than that gets a shard of its own), filled in the given order as mlx-lm's
/// `make_shards` does, each with metadata `{"format": "mlx"}`, and writes
/// `model.safetensors.index.json` (`metadata.total_size`, `weight_map` sorted by name).
/// Returns the shard paths.
pub fn save_sharded<S: AsRef<str>>(
    dir: impl AsRef<Path>,
    tensors: &[(S, &Array)],
    max_shard_bytes: usize,
) -> Result<Vec<PathBuf>> {
    const OP: &str = "save_sharded";
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(OP, format!("cannot create {}: {e}", dir.display())))?;
    let mut shards: Vec<Vec<(&str, &Array)>> = vec![Vec::new()];
    let mut size = 0usize;
    for (name, a) in tensors {
        let last = shards.last().expect("one shard");
        if !last.is_empty() && size + a.nbytes() > max_shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += a.nbytes();
        shards
            .last_mut()
            .expect("one shard")
            .push((name.as_ref(), *a));
    }
    let n = shards.len();
    let meta: Metadata = [("format".to_string(), "mlx".to_string())].into();
    let mut weight_map = std::collections::BTreeMap::new();
    let mut paths = Vec::with_capacity(n);
    for (i, shard) in shards.iter().enumerate() {
        let file = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let path = dir.join(&file);
        save_safetensors(&path, shard, &meta)?;
        for (name, _) in shard {
            weight_map.insert(name.to_string(), Value::String(file.clone()));
        }
        paths.push(path);
    }
    let total: usize = tensors.iter().map(|(_, a)| a.nbytes()).sum();
    let index = json!({
        "metadata": {"total_size": total},
        "weight_map": Value::Object(weight_map.into_iter().collect::<Map<_, _>>()),
    });
    let text = serde_json::to_string_pretty(&index).map_err(|e| Error::io(OP, e.to_string()))?;
    let index_path = dir.join("model.safetensors.index.json");
    crate::file::write_atomic(OP, &index_path, |w| {
        crate::file::put(OP, &index_path, w, text.as_bytes())
    })?;
    Ok(paths)
}
