//! `rmlx generate --prompts-file FILE`: many prompts generated together by the batch engine
//! (ragged caches, per-prompt settings), one JSON line `{"index", "text", "finish_reason"}` per
//! prompt on stdout, in file order. The file holds one prompt a line, or JSON lines
//! `{"prompt": ..., "max_tokens": ..., "temp": ..., "seed": ..., "top_p": ..., "top_k": ...,
//! "min_p": ...}` (absent fields take the command line's values). Blank lines are skipped.

use crate::{prompt_ids, CliResult};
use rmlx_lm::batch::{batch_generate, BatchOptions, SeqRequest};
use rmlx_lm::chat_template::ChatMessage;
use rmlx_lm::generate::GenerateOptions;
use rmlx_lm::load::LoadedModel;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// One prompt of the file with its settings.
pub struct FilePrompt {
    pub prompt: String,
    pub opts: GenerateOptions,
}

/// Reads the file; errors name the line and the field.
pub fn read(path: &Path, base: &GenerateOptions) -> CliResult<Vec<FilePrompt>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --prompts-file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |msg: String| format!("{} line {}: {msg}", path.display(), i + 1);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if !line.trim_start().starts_with('{') {
            out.push(FilePrompt {
                prompt: line.to_string(),
                opts: base.clone(),
            });
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| at(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| at("expected a JSON object".into()))?;
        let mut opts = base.clone();
        let mut prompt = None;
        for (k, x) in obj {
            let num = || {
                x.as_f64()
                    .ok_or_else(|| at(format!("`{k}` must be a number, got {x}")))
            };
            let uint = || {
                x.as_u64()
                    .ok_or_else(|| at(format!("`{k}` must be a non-negative integer, got {x}")))
            };
            match k.as_str() {
                "prompt" => {
                    prompt = Some(
                        x.as_str()
                            .ok_or_else(|| at(format!("`prompt` must be a string, got {x}")))?
                            .to_string(),
                    )
                }
                "max_tokens" => opts.max_tokens = uint()? as usize,
                "temp" | "temperature" => opts.sampler.temp = num()? as f32,
                "top_p" => opts.sampler.top_p = num()? as f32,
                "top_k" => opts.sampler.top_k = uint()? as usize,
                "min_p" => opts.sampler.min_p = num()? as f32,
                "seed" => opts.sampler.seed = Some(uint()?),
                other => {
                    return Err(at(format!(
                        "unknown field `{other}` (known: prompt, max_tokens, temp, top_p, top_k, min_p, seed)"
                    )))
                }
            }
        }
        let prompt = prompt.ok_or_else(|| at("missing `prompt`".into()))?;
        out.push(FilePrompt { prompt, opts });
    }
    if out.is_empty() {
        return Err(format!("--prompts-file {} holds no prompt", path.display()));
    }
    Ok(out)
}

/// Generates every prompt of the file together and prints one JSON line per prompt.
pub fn run(
    m: &LoadedModel,
    prompts: Vec<FilePrompt>,
    system: Option<&str>,
    use_template: bool,
    verbose: bool,
) -> CliResult<()> {
    let mut reqs = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.into_iter().enumerate() {
        let ids = if use_template {
            let mut msgs: Vec<ChatMessage> = system
                .iter()
                .map(|s| ChatMessage::new("system", *s))
                .collect();
            msgs.push(ChatMessage::new("user", p.prompt));
            prompt_ids(m, &msgs, None)
        } else {
            prompt_ids(m, &[], Some(&p.prompt))
        }
        .map_err(|e| format!("prompt {i}: {e}"))?;
        reqs.push(SeqRequest::new(ids, p.opts));
    }
    let (results, stats) = batch_generate(
        m.model.as_ref(),
        &m.tokenizer,
        reqs,
        &BatchOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, r) in results.iter().enumerate() {
        let mut line =
            json!({"index": i, "text": r.text, "finish_reason": r.finish_reason.as_str()});
        if let rmlx_lm::batch::FinishReason::Error(e) = &r.finish_reason {
            line["error"] = json!(e);
        }
        writeln!(out, "{line}").map_err(|e| format!("writing output: {e}"))?;
    }
    if verbose {
        eprintln!("==========");
        eprintln!(
            "Prompt: {} tokens, {:.3} tokens-per-sec",
            stats.prompt_tokens,
            stats.prompt_tokens as f64 / stats.prefill_secs.max(1e-9)
        );
        eprintln!(
            "Generation: {} tokens, {:.3} tokens-per-sec (all sequences), {:.2} rows per decode pass",
            stats.generation_tokens,
            stats.generation_tokens as f64 / (stats.decode_secs + stats.prefill_secs).max(1e-9),
            stats.decode_rows as f64 / stats.decode_passes.max(1) as f64
        );
        eprintln!("Peak memory: {:.3} GB", rmlx::peak_memory() as f64 / 1e9);
    }
    Ok(())
}
