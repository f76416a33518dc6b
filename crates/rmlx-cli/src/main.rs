//! `rmlx`: the command line of the rmlx LLM runtime, with mlx_lm's flag names and output formats.
//! Standard output carries only results (generated text, bench lines, perplexity); statistics,
//! progress and errors go to standard error. Errors are one line and exit with status 1.

mod bench;
mod bench_batch;
mod model_path;
mod prompts_file;
mod serve;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rmlx_lm::chat_template::ChatMessage;
use rmlx_lm::generate::{stream_generate, GenerateOptions};
use rmlx_lm::load::{load, LoadOptions, LoadedModel};
use rmlx_lm::sample::SamplerSettings;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An error for the user: printed as one line on stderr.
type CliResult<T> = Result<T, String>;

#[derive(Parser)]
#[command(
    name = "rmlx",
    version,
    about = "Run, chat with, benchmark and convert LLMs on rmlx"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Generate(GenerateArgs),
    /// An interactive conversation (/reset clears the history, /exit quits).
    Chat(ChatArgs),
    /// Prompt and generation throughput, as mlx_lm.benchmark prints it.
    Bench(bench::BenchArgs),
    /// Convert an HF directory or GGUF file to an MLX-format directory, optionally quantized.
    Convert(ConvertArgs),
    /// Perplexity of the model on a text file.
    Perplexity(PerplexityArgs),
    /// OpenAI-compatible HTTP server with continuous batching.
    Serve(serve::ServeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    /// The GPU where one is present, else the CPU.
    Auto,
    Cpu,
    Gpu,
}

/// Model selection shared by every command.
#[derive(Args, Clone)]
pub(crate) struct ModelArgs {
    /// A Hugging Face / mlx-community directory or a .gguf file (default: SmolLM2-135M-Instruct
    /// Q4_1, fetched into the cache if missing).
    #[arg(long, short = 'm')]
    pub(crate) model: Option<PathBuf>,
    /// Where to run: gpu (CUDA device 0), cpu, or auto (the GPU where one is present).
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Maximum number of tokens to generate.
    #[arg(long = "max-tokens", short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    #[arg(long = "top-p", default_value_t = 1.0)]
    top_p: f32,
    #[arg(long = "top-k", default_value_t = 0)]
    top_k: usize,
    #[arg(long = "min-p", default_value_t = 0.0)]
    min_p: f32,
    /// Random seed for sampling.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    kv: KvArgs,
}

/// The KV cache's quantization (`generate`, `chat`, `bench`).
#[derive(Args, Clone)]
pub(crate) struct KvArgs {
    /// Quantize the KV cache to this many bits (4 or 8).
    #[arg(long = "kv-bits")]
    pub(crate) kv_bits: Option<usize>,
    #[arg(long = "kv-group-size", default_value_t = 64)]
    pub(crate) kv_group_size: usize,
}

impl KvArgs {
    /// `--kv-bits` is 4 or 8 where given.
    pub(crate) fn check(&self) -> CliResult<()> {
        match self.kv_bits {
            Some(b) if b != 4 && b != 8 => Err(format!("--kv-bits must be 4 or 8, got {b}")),
            _ => Ok(()),
        }
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt ("-" reads standard input).
    #[arg(long, short = 'p', default_value = "hello")]
    prompt: String,
    /// Generate every prompt of this file together (one a line, or JSON lines
    /// {"prompt", "max_tokens", "temp", "seed"}); prints JSON lines {"index", "text", "finish_reason"}.
    #[arg(long = "prompts-file", conflicts_with = "prompt")]
    prompts_file: Option<PathBuf>,
    #[arg(long = "system-prompt")]
    system_prompt: Option<String>,
    /// Feed the prompt as it is, without the model's chat template.
    #[arg(long = "ignore-chat-template")]
    ignore_chat_template: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print statistics on standard error.
    #[arg(long)]
    verbose: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long = "system-prompt")]
    system_prompt: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Args)]
struct ConvertArgs {
    /// Source: HF directory (float safetensors) or .gguf file.
    #[arg(long, alias = "hf-path")]
    model: PathBuf,
    /// Output directory.
    #[arg(long, alias = "mlx-path", default_value = "mlx_model")]
    out: PathBuf,
    #[arg(long, short = 'q')]
    quantize: bool,
    #[arg(long = "q-bits", default_value_t = 4)]
    q_bits: usize,
    #[arg(long = "q-group-size", default_value_t = 64)]
    q_group_size: usize,
    /// float16 | bfloat16 | float32 (also f16 | bf16 | f32).
    #[arg(long)]
    dtype: Option<String>,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long = "text-file")]
    text_file: PathBuf,
    /// Tokens per non-overlapping window.
    #[arg(long, default_value_t = 512)]
    context: usize,
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Command::Generate(a) => generate(a),
        Command::Chat(a) => chat(a),
        Command::Bench(a) => bench::run(a),
        Command::Convert(a) => convert(a),
        Command::Perplexity(a) => perplexity(a),
        Command::Serve(a) => serve::run(a),
    };
    if let Err(e) = res {
        let line = e.replace('\n', " ");
        eprintln!("rmlx: error: {line}");
        std::process::exit(1);
    }
}

/// Loads the model (fetching the default one if needed) with a spinner on a terminal.
/// Returns it with the load time in seconds.
pub(crate) fn load_model(args: &ModelArgs) -> CliResult<(LoadedModel, f64)> {
    select_device(args.device)?;
    let path = match &args.model {
        Some(p) => {
            if !p.exists() {
                return Err(format!("model path {} does not exist", p.display()));
            }
            p.clone()
        }
        None => model_path::default_model()?,
    };
    let t0 = Instant::now();
    let bar = spinner(&format!("loading {}", path.display()));
    let m = load(&path, &LoadOptions::default()).map_err(|e| e.to_string());
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((m?, t0.elapsed().as_secs_f64()))
}

/// `--random-weights --config FILE`: a model of the shape a `config.json` describes, with
/// random weights, instead of a loaded one (benchmarks and load tests; speed does not depend on
/// the values).
#[derive(Args, Clone)]
pub(crate) struct RandomWeightsArgs {
    /// Build the model that `--config` describes with random weights on the device instead of
    /// loading one; its tokenizer maps the word `<i>` to token i (any other word to 0).
    #[arg(long = "random-weights", requires = "config")]
    pub(crate) random_weights: bool,
    /// A `config.json` of any supported architecture, optionally with a `quantization` block
    /// `{"group_size": 64, "bits": 4}` (with `--random-weights`).
    #[arg(long, requires = "random_weights")]
    pub(crate) config: Option<PathBuf>,
}

/// [`load_model`], or the random model `r` asks for; also each made tensor's name and bytes
/// (empty for a loaded model).
pub(crate) fn load_or_random(
    args: &ModelArgs,
    r: &RandomWeightsArgs,
) -> CliResult<(LoadedModel, f64, rmlx_lm::load::MadeTensors)> {
    let Some(path) = r.config.as_ref().filter(|_| r.random_weights) else {
        let (m, load_s) = load_model(args)?;
        return Ok((m, load_s, Vec::new()));
    };
    select_device(args.device)?;
    let t0 = Instant::now();
    let (m, made) = rmlx_lm::load::random(path, 0).map_err(|e| e.to_string())?;
    Ok((m, t0.elapsed().as_secs_f64(), made))
}

/// Makes the chosen device the process default: every op the model builds runs there, and
/// weights move to it on first use.
pub(crate) fn select_device(d: DeviceArg) -> CliResult<()> {
    let gpu = rmlx::Device::gpu(0);
    let dev = match d {
        DeviceArg::Cpu => rmlx::Device::cpu(),
        DeviceArg::Auto if rmlx::is_available(gpu) => gpu,
        DeviceArg::Auto => rmlx::Device::cpu(),
        DeviceArg::Gpu => {
            if !rmlx::is_available(gpu) {
                return Err("--device gpu: no CUDA device was found (is the NVIDIA driver installed and a GPU visible?); use --device cpu".into());
            }
            gpu
        }
    };
    rmlx::set_default_device(dev);
    Ok(())
}

/// A spinner on stderr, only when stderr is a terminal.
pub(crate) fn spinner(msg: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.set_message(msg.to_string());
    b.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(b)
}

fn gen_options(s: &SamplingArgs) -> CliResult<GenerateOptions> {
    s.kv.check()?;
    if s.temp < 0.0 || !s.temp.is_finite() {
        return Err(format!("--temp must be >= 0, got {}", s.temp));
    }
    Ok(GenerateOptions {
        max_tokens: s.max_tokens,
        sampler: SamplerSettings {
            temp: s.temp,
            top_p: s.top_p,
            top_k: s.top_k,
            min_p: s.min_p,
            seed: s.seed,
            ..SamplerSettings::default()
        },
        kv_bits: s.kv.kv_bits,
        kv_group_size: s.kv.kv_group_size,
        ..GenerateOptions::default()
    })
}

/// The prompt's token ids: through the chat template unless told otherwise (then encoded
/// without adding BOS, as the template writes it), or as plain text with the model's BOS rule.
fn prompt_ids(m: &LoadedModel, messages: &[ChatMessage], raw: Option<&str>) -> CliResult<Vec<u32>> {
    let tk = &m.tokenizer;
    match raw {
        Some(text) => tk.encode(text, true).map_err(|e| e.to_string()),
        None => {
            let s = tk
                .apply_chat_template(messages, true)
                .map_err(|e| e.to_string())?;
            tk.encode(&s, false).map_err(|e| e.to_string())
        }
    }
}

fn generate(a: GenerateArgs) -> CliResult<()> {
    if let Some(file) = &a.prompts_file {
        let base = gen_options(&a.sampling)?;
        let prompts = prompts_file::read(file, &base)?;
        let (m, _) = load_model(&a.model)?;
        let use_template = !a.ignore_chat_template && m.tokenizer.chat_template().is_some();
        return prompts_file::run(
            &m,
            prompts,
            a.system_prompt.as_deref(),
            use_template,
            a.verbose,
        );
    }
    let prompt = if a.prompt == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read the prompt from stdin: {e}"))?;
        s
    } else {
        a.prompt.clone()
    };
    let opts = gen_options(&a.sampling)?;
    let (m, load_s) = load_model(&a.model)?;
    let use_template = !a.ignore_chat_template && m.tokenizer.chat_template().is_some();
    let ids = if use_template {
        let mut msgs = Vec::new();
        if let Some(sys) = &a.system_prompt {
            msgs.push(ChatMessage::new("system", sys.clone()));
        }
        msgs.push(ChatMessage::new("user", prompt));
        prompt_ids(&m, &msgs, None)?
    } else {
        prompt_ids(&m, &[], Some(&prompt))?
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut last = None;
    for r in
        stream_generate(m.model.as_ref(), &m.tokenizer, &ids, &opts).map_err(|e| e.to_string())?
    {
        let r = r.map_err(|e| e.to_string())?;
        out.write_all(r.text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| format!("writing output: {e}"))?;
        last = Some(r);
    }
    writeln!(out).map_err(|e| format!("writing output: {e}"))?;
    if a.verbose {
        eprintln!("==========");
        match last {
            Some(r) => {
                eprintln!(
                    "Prompt: {} tokens, {:.3} tokens-per-sec",
                    r.prompt_tokens, r.prompt_tps
                );
                eprintln!(
                    "Generation: {} tokens, {:.3} tokens-per-sec",
                    r.generation_tokens, r.generation_tps
                );
                eprintln!("Peak memory: {:.3} GB", r.peak_memory);
            }
            None => eprintln!("Prompt: {} tokens, no tokens generated", ids.len()),
        }
        eprintln!("Load time: {load_s:.3} s");
        eprintln!("Device: {}", rmlx::default_device());
    }
    Ok(())
}

fn chat(a: ChatArgs) -> CliResult<()> {
    let opts = gen_options(&a.sampling)?;
    let (m, _) = load_model(&a.model)?;
    if m.tokenizer.chat_template().is_none() {
        return Err("the model has no chat template; `rmlx chat` needs one".into());
    }
    let fresh = || -> Vec<ChatMessage> {
        a.system_prompt
            .iter()
            .map(|s| ChatMessage::new("system", s.clone()))
            .collect()
    };
    let mut history = fresh();
    let interactive = std::io::stdin().is_terminal();
    eprintln!("[rmlx chat] type your message; /reset clears the history, /exit quits");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!(">> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = fresh();
                eprintln!("[history cleared]");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", line));
        let ids = prompt_ids(&m, &history, None)?;
        let mut reply = String::new();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for r in stream_generate(m.model.as_ref(), &m.tokenizer, &ids, &opts)
            .map_err(|e| e.to_string())?
        {
            let r = r.map_err(|e| e.to_string())?;
            reply.push_str(&r.text);
            out.write_all(r.text.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| format!("writing output: {e}"))?;
        }
        writeln!(out).map_err(|e| format!("writing output: {e}"))?;
        history.push(ChatMessage::new("assistant", reply));
    }
    Ok(())
}

fn parse_dtype(s: &str) -> CliResult<rmlx::Dtype> {
    Ok(match s {
        "float16" | "f16" | "fp16" => rmlx::Dtype::F16,
        "bfloat16" | "bf16" => rmlx::Dtype::BF16,
        "float32" | "f32" | "fp32" => rmlx::Dtype::F32,
        other => {
            return Err(format!(
                "--dtype {other:?}: use float16, bfloat16 or float32 (f16, bf16, f32)"
            ))
        }
    })
}

fn convert(a: ConvertArgs) -> CliResult<()> {
    let dtype = a.dtype.as_deref().map(parse_dtype).transpose()?;
    if !a.model.exists() {
        return Err(format!("model path {} does not exist", a.model.display()));
    }
    let opts = rmlx_lm::convert::ConvertOptions {
        quantize: a.quantize,
        q_bits: a.q_bits,
        q_group_size: a.q_group_size,
        dtype,
    };
    let bar = spinner(&format!("converting {}", a.model.display()));
    let res = rmlx_lm::convert::convert(&a.model, &a.out, &opts).map_err(|e| e.to_string());
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    res?;
    eprintln!("[rmlx convert] wrote {}", a.out.display());
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> CliResult<()> {
    let text = std::fs::read_to_string(&a.text_file)
        .map_err(|e| format!("cannot read --text-file {}: {e}", a.text_file.display()))?;
    let (m, _) = load_model(&a.model)?;
    // Tokenized once, as plain text with the model's BOS rule.
    let ids = m.tokenizer.encode(&text, true).map_err(|e| e.to_string())?;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(ids.len().div_ceil(a.context.max(1)) as u64);
        b.set_message("windows");
        Some(b)
    } else {
        None
    };
    let acc = rmlx_lm::perplexity::perplexity_with_progress(
        m.model.as_ref(),
        &ids,
        a.context,
        |done, _| {
            if let Some(b) = &bar {
                b.set_position(done as u64);
            }
        },
    )
    .map_err(|e| e.to_string())?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    eprintln!(
        "[rmlx perplexity] {} tokens, {} scored, context {}",
        ids.len(),
        acc.count,
        a.context
    );
    println!("Perplexity: {:.3}", acc.perplexity());
    Ok(())
}

/// Used by `model_path` for messages naming a path.
pub(crate) fn show(p: &Path) -> String {
    p.display().to_string()
}
