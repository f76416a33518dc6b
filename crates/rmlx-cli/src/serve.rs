//! `rmlx serve`: the OpenAI-compatible server (crate `rmlx-server`) on a loaded model.

use crate::{load_or_random, CliResult, ModelArgs, RandomWeightsArgs};
use clap::Args;
use rmlx_lm::batch::BatchOptions;
use rmlx_lm::scheduler::SchedulerConfig;
use rmlx_server::api::Limits;
use rmlx_server::ServerConfig;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// (`--random-weights --config FILE`: a load test's model; prompts become token 0 words.)
    #[command(flatten)]
    random: RandomWeightsArgs,
    /// Address to listen on (loopback by default; set --api-key before exposing it further).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health (default: $RMLX_API_KEY).
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Requests waiting for a place in the batch before new ones get 503.
    #[arg(long = "max-queue", default_value_t = 64)]
    max_queue: usize,
    /// Sequences generating at once.
    #[arg(long = "max-batch", default_value_t = 16)]
    max_batch: usize,
    /// KV cache memory for running requests and the prefix cache, in MB.
    #[arg(long = "kv-budget-mb", default_value_t = 2048)]
    kv_budget_mb: usize,
    /// Prefix cache size in MB (0 = off).
    #[arg(long = "prefix-cache-mb", default_value_t = 256)]
    prefix_cache_mb: usize,
    /// Largest request body in bytes.
    #[arg(long = "max-body-bytes", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Longest prompt in tokens (the model's context bounds it too).
    #[arg(long = "max-prompt-tokens", default_value_t = 32768)]
    max_prompt_tokens: usize,
    /// max_tokens when a request does not say.
    #[arg(long = "max-tokens", default_value_t = 512)]
    max_tokens: usize,
    /// Temperature when a request does not say.
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    /// Prompt tokens per prefill chunk (decode steps run between chunks).
    #[arg(long = "prefill-step-size", default_value_t = 256)]
    prefill_step_size: usize,
    /// Sequences per decode forward pass (above 8 results depend on the batch).
    #[arg(long = "max-rows", default_value_t = rmlx_lm::batch::DECODE_ROWS)]
    max_rows: usize,
}

pub fn run(a: ServeArgs) -> CliResult<()> {
    if a.max_queue == 0 || a.max_batch == 0 || a.max_rows == 0 || a.prefill_step_size == 0 {
        return Err(
            "--max-queue, --max-batch, --max-rows and --prefill-step-size must be >= 1".into(),
        );
    }
    if !(a.temp.is_finite() && a.temp >= 0.0) {
        return Err(format!("--temp must be >= 0, got {}", a.temp));
    }
    let api_key = a
        .api_key
        .clone()
        .or_else(|| std::env::var("RMLX_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let (m, load_s, _) = load_or_random(&a.model, &a.random)?;
    let model_id = match &m.source {
        rmlx_lm::load::ModelSource::Dir(p)
        | rmlx_lm::load::ModelSource::Gguf(p)
        | rmlx_lm::load::ModelSource::Random(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rmlx".into()),
    };
    let cfg = ServerConfig {
        host: a.host.clone(),
        port: a.port,
        api_key: api_key.clone(),
        model_id: model_id.clone(),
        max_body_bytes: a.max_body_bytes,
        limits: Limits {
            max_prompt_tokens: a.max_prompt_tokens,
            default_max_tokens: a.max_tokens,
            default_temp: a.temp,
        },
        scheduler: SchedulerConfig {
            max_queue: a.max_queue,
            max_batch: a.max_batch,
            kv_budget_bytes: a.kv_budget_mb << 20,
            prefix_cache_bytes: a.prefix_cache_mb << 20,
            batch: BatchOptions {
                max_rows: a.max_rows,
                prefill_tokens: a.prefill_step_size,
            },
        },
    };
    let h = rmlx_server::start(m, cfg)?;
    eprintln!(
        "[rmlx serve] {model_id} loaded in {load_s:.2} s; listening on http://{}{} (device {})",
        h.addr,
        if api_key.is_some() {
            ", API key required"
        } else {
            ""
        },
        rmlx::default_device()
    );
    h.wait();
    Ok(())
}
