//! The tokenizer: Hugging Face `tokenizer.json` through the `tokenizers` crate, or one built
//! from a GGUF file's vocabulary (`tokenizer.ggml.*`): byte-level BPE with merges (`gpt2`) or
//! SentencePiece scores (`llama`, turned into BPE merges the way transformers' GGUF loader
//! does), plus BOS/EOS rules and the chat template.

use crate::chat_template::{self, ChatMessage, TemplateContext};
use crate::error::{LmError, Result};
use std::collections::BTreeSet;
use std::path::Path;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp numbers them.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// End-of-turn tokens that end generation when the vocabulary has them (llama.cpp's EOG list).
const END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
];

/// The tokenizer-relevant metadata of a GGUF file (`tokenizer.ggml.*`, `tokenizer.chat_template`).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a BPE vocabulary (`smollm`, `llama-bpe`, ...).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<i32>>,
    /// BPE merges, `"left right"` each.
    pub merges: Option<Vec<String>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub eot_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<String>,
}

/// A text ⇄ token-id codec with the model's special-token rules and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    eos_ids: Vec<u32>,
    /// Whether `encode(.., true)` prepends BOS / appends EOS itself (the tokenizer.json's own
    /// post-processor, when there is one, does it otherwise).
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn tk_err(what: &str) -> impl Fn(tokenizers::Error) -> LmError + '_ {
    move |e| LmError::Tokenizer(format!("{what}: {e}"))
}

/// Reads a JSON file if it exists; `Ok(None)` when absent.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LmError::Tokenizer(format!("{} is not valid JSON: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LmError::Io(format!("cannot read {}: {e}", path.display()))),
    }
}

/// A special token in tokenizer_config.json: `"<s>"` or `{"content": "<s>", ...}`.
fn token_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `eos_token_id` of config.json / generation_config.json: one id or a list.
fn ids_of(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// The chat template of [`Tokenizer::ids_only`]: one `role: content` line a message.
const IDS_ONLY_CHAT_TEMPLATE: &str =
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
    {% if add_generation_prompt %}assistant:{% endif %}";

impl Tokenizer {
    /// Loads a Hugging Face / mlx-community model directory's tokenizer: `tokenizer.json`,
    /// with `tokenizer_config.json` (BOS/EOS, `add_bos_token`, `chat_template`, or a
    /// `chat_template.jinja` file), `generation_config.json` and `config.json` (EOS ids).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        if !tj.is_file() {
            return Err(LmError::Tokenizer(format!(
                "{} not found (the model directory needs the Hugging Face tokenizer file)",
                tj.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(&tj)
            .map_err(|e| LmError::Tokenizer(format!("cannot load {}: {e}", tj.display())))?;
        let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let gen = read_json(&dir.join("generation_config.json"))?.unwrap_or_default();
        let model_cfg = read_json(&dir.join("config.json"))?.unwrap_or_default();

        let bos_token = token_text(cfg.get("bos_token"));
        let eos_token = token_text(cfg.get("eos_token"));
        let bos_id = bos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .or_else(|| ids_of(gen.get("bos_token_id")).first().copied())
            .or_else(|| ids_of(model_cfg.get("bos_token_id")).first().copied());
        let mut eos: BTreeSet<u32> = BTreeSet::new();
        eos.extend(eos_token.as_deref().and_then(|t| inner.token_to_id(t)));
        eos.extend(ids_of(gen.get("eos_token_id")));
        eos.extend(ids_of(model_cfg.get("eos_token_id")));
        // A tokenizer.json post-processor already adds BOS/EOS; otherwise follow the config.
        let has_pp = inner.get_post_processor().is_some();
        let add_bos = !has_pp
            && cfg
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
        let add_eos = !has_pp
            && cfg
                .get("add_eos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);

        let chat_template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| a.first())
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        let chat_template = match chat_template {
            Some(t) => Some(t),
            None => match std::fs::read_to_string(dir.join("chat_template.jinja")) {
                Ok(t) => Some(t),
                Err(_) => read_json(&dir.join("chat_template.json"))?
                    .and_then(|v| v.get("chat_template")?.as_str().map(str::to_string)),
            },
        };
        Ok(Self {
            inner,
            bos_id,
            bos_token,
            eos_token,
            eos_ids: eos.into_iter().collect(),
            add_bos,
            add_eos,
            chat_template,
        })
    }

    /// Builds the tokenizer of a GGUF file from its `tokenizer.ggml.*` metadata. A Gemma GGUF
    /// without `tokenizer.chat_template` gets Gemma 3's Hugging Face template (as llama.cpp
    /// falls back to its built-in "gemma" template).
    pub fn from_gguf(g: &rmlx::io::GgufFile) -> Result<Self> {
        let opt_u32 = |k: &str| g.get(k).and_then(|_| g.get_u32(k).ok());
        let opt_bool = |k: &str| g.get(k).and_then(|_| g.get_bool(k).ok());
        let opt_str = |k: &str| g.get(k).and_then(|_| g.get_str(k).ok()).map(str::to_string);
        let need = |e: rmlx::Error| LmError::Tokenizer(format!("GGUF tokenizer metadata: {e}"));
        let model = g.get_str("tokenizer.ggml.model").map_err(need)?.to_string();
        let tokens = g.get_str_array("tokenizer.ggml.tokens").map_err(need)?;
        let tokens: Vec<String> = tokens.into_iter().map(str::to_string).collect();
        let arr = |k: &str| g.get(k).is_some();
        let v = GgufVocab {
            model,
            pre: opt_str("tokenizer.ggml.pre"),
            tokens,
            scores: if arr("tokenizer.ggml.scores") {
                Some(g.get_f32_array("tokenizer.ggml.scores").map_err(need)?)
            } else {
                None
            },
            token_types: if arr("tokenizer.ggml.token_type") {
                Some(g.get_i32_array("tokenizer.ggml.token_type").map_err(need)?)
            } else {
                None
            },
            merges: if arr("tokenizer.ggml.merges") {
                Some(
                    g.get_str_array("tokenizer.ggml.merges")
                        .map_err(need)?
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                )
            } else {
                None
            },
            bos_token_id: opt_u32("tokenizer.ggml.bos_token_id"),
            eos_token_id: opt_u32("tokenizer.ggml.eos_token_id"),
            eot_token_id: opt_u32("tokenizer.ggml.eot_token_id"),
            unknown_token_id: opt_u32("tokenizer.ggml.unknown_token_id"),
            add_bos_token: opt_bool("tokenizer.ggml.add_bos_token"),
            add_eos_token: opt_bool("tokenizer.ggml.add_eos_token"),
            add_space_prefix: opt_bool("tokenizer.ggml.add_space_prefix"),
            chat_template: opt_str("tokenizer.chat_template").or_else(|| {
                let arch = opt_str("general.architecture").unwrap_or_default();
                arch.starts_with("gemma")
                    .then(|| GEMMA3_TEMPLATE.to_string())
            }),
        };
        Self::from_gguf_vocab(v)
    }

    /// Builds the tokenizer a GGUF file describes (see [`GgufVocab`]).
    pub fn from_gguf_vocab(v: GgufVocab) -> Result<Self> {
        let n = v.tokens.len();
        if n == 0 {
            return Err(LmError::Tokenizer(
                "GGUF key tokenizer.ggml.tokens is missing or empty".into(),
            ));
        }
        let check_id = |key: &str, id: Option<u32>| -> Result<Option<u32>> {
            match id {
                Some(i) if i as usize >= n => Err(LmError::Tokenizer(format!(
                    "GGUF key {key} = {i} is outside the vocabulary of {n} tokens"
                ))),
                other => Ok(other),
            }
        };
        let bos_id = check_id("tokenizer.ggml.bos_token_id", v.bos_token_id)?;
        let eos_id = check_id("tokenizer.ggml.eos_token_id", v.eos_token_id)?;
        let eot_id = check_id("tokenizer.ggml.eot_token_id", v.eot_token_id)?;
        let unk_id = check_id("tokenizer.ggml.unknown_token_id", v.unknown_token_id)?;
        let types = v.token_types.clone().unwrap_or_else(|| vec![1; n]);
        if types.len() != n {
            return Err(LmError::Tokenizer(format!(
                "GGUF tokenizer.ggml.token_type has {} entries for {n} tokens",
                types.len()
            )));
        }
        let vocab: Vocab = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();

        let mut inner = match v.model.as_str() {
            "gpt2" => build_bpe(&v, vocab)?,
            "llama" => build_spm(&v, vocab, unk_id)?,
            other => {
                return Err(LmError::Tokenizer(format!(
                "GGUF tokenizer.ggml.model = {other:?} is not supported (supported: gpt2, llama)"
            )))
            }
        };
        // Control and user-defined tokens are matched whole in the text, as llama.cpp and HF do.
        let specials: Vec<AddedToken> = v
            .tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .map(|(tok, &t)| {
                AddedToken::from(tok.clone(), t == TOKEN_TYPE_CONTROL).normalized(false)
            })
            .collect();
        inner.add_special_tokens(&specials);

        let mut eos: BTreeSet<u32> = BTreeSet::new();
        eos.extend(eos_id);
        eos.extend(eot_id);
        for name in END_OF_TURN {
            if let Some(&id) = v
                .tokens
                .iter()
                .position(|t| t == name)
                .map(|i| i as u32)
                .as_ref()
            {
                if types[id as usize] == TOKEN_TYPE_CONTROL
                    || types[id as usize] == TOKEN_TYPE_USER_DEFINED
                {
                    eos.insert(id);
                }
            }
        }
        Ok(Self {
            bos_token: bos_id.map(|i| v.tokens[i as usize].clone()),
            eos_token: eos_id.map(|i| v.tokens[i as usize].clone()),
            inner,
            bos_id,
            eos_ids: eos.into_iter().collect(),
            // llama.cpp's defaults when the key is absent: SPM adds BOS, BPE does not.
            add_bos: v.add_bos_token.unwrap_or(v.model == "llama") && bos_id.is_some(),
            add_eos: v.add_eos_token.unwrap_or(false) && eos_id.is_some(),
            chat_template: v.chat_template,
        })
    }

    /// A stand-in for a model that comes without a tokenizer (random weights for a benchmark
    /// or a load test): token `i` is the word `<i>` (any other word is token 0), text is words
    /// split at whitespace, decoding joins them with spaces; no BOS or EOS (generation runs to
    /// its token limit); a plain `role: content` chat template, so chat requests work.
    pub fn ids_only(vocab_size: usize) -> Result<Self> {
        if vocab_size == 0 || vocab_size > u32::MAX as usize {
            return Err(LmError::Tokenizer(format!(
                "an ids-only tokenizer needs 1 to 2^32 - 1 tokens, got {vocab_size}"
            )));
        }
        let vocab: Vocab = (0..vocab_size as u32)
            .map(|i| (format!("<{i}>"), i))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("<0>".into())
            .build()
            .map_err(tk_err("cannot build the ids-only vocabulary"))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(WhitespaceSplit));
        Ok(Self {
            inner,
            bos_id: None,
            bos_token: None,
            eos_token: None,
            eos_ids: Vec::new(),
            add_bos: false,
            add_eos: false,
            chat_template: Some(IDS_ONLY_CHAT_TEMPLATE.into()),
        })
    }

    /// Text to ids. Special-token text in `text` (`<|im_start|>`) becomes the special token;
    /// with `add_special_tokens`, BOS/EOS are added where the model's settings say so.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(tk_err("encode failed"))?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        if add_special_tokens && self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special_tokens && self.add_eos {
            ids.extend(self.eos_ids.first());
        }
        Ok(ids)
    }

    /// Ids to text; special tokens are kept as their text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(tk_err("decode failed"))
    }

    /// Ids to text without special tokens.
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(tk_err("decode failed"))
    }

    /// Every id that ends generation (EOS and end-of-turn tokens).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Whether `encode(.., true)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The model's Jinja chat template, if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Renders the chat template over `messages` (as transformers' `apply_chat_template` with
    /// `tokenize=False`); encode the result with `add_special_tokens = false` as mlx_lm does,
    /// since templates write BOS themselves.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let t = self.chat_template.as_deref().ok_or_else(|| {
            LmError::Template("the model has no chat template (use --ignore-chat-template)".into())
        })?;
        let ctx = TemplateContext {
            bos_token: self.bos_token.as_deref(),
            eos_token: self.eos_token.as_deref(),
        };
        chat_template::render(t, messages, add_generation_prompt, &ctx)
    }

    /// The `tokenizer.json` text of this tokenizer (what `convert` writes for GGUF sources).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(tk_err("cannot serialize the tokenizer"))
    }

    /// `tokenizer_config.json` content for this tokenizer (BOS/EOS, add_bos, chat template).
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "clean_up_tokenization_spaces": false,
            "chat_template": self.chat_template,
        })
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Gemma 3's chat template as its Hugging Face `tokenizer_config.json` ships it (Gemma GGUFs
/// often carry none).
pub const GEMMA3_TEMPLATE: &str = "{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = \"\" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = \"model\" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception(\"Invalid content type\") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
";

/// The GPT-2 family pre-tokenizer regexes llama.cpp names by `tokenizer.ggml.pre`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`) with the merges of the file.
fn build_bpe(v: &GgufVocab, vocab: Vocab) -> Result<tokenizers::Tokenizer> {
    let merges = v
        .merges
        .as_ref()
        .ok_or_else(|| {
            LmError::Tokenizer(
                "GGUF key tokenizer.ggml.merges is missing (needed by a gpt2 tokenizer)".into(),
            )
        })?
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    LmError::Tokenizer(format!("GGUF merge {m:?} is not \"left right\""))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| {
            LmError::Tokenizer(format!(
                "cannot build the BPE model from the GGUF vocabulary: {e}"
            ))
        })?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let s = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tk_err("bad pre-tokenizer regex"))?;
        Ok(PreTokenizerWrapper::Split(s))
    };
    let pre = v.pre.as_deref().unwrap_or("default");
    let pre_tok: PreTokenizerWrapper = match pre {
        "default" | "gpt2" | "gpt-2" | "starcoder" | "refact" => PreTokenizerWrapper::ByteLevel(byte_level),
        "smollm" => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ])),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            split(LLAMA3_REGEX)?,
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
        ])),
        "qwen2" | "deepseek-r1-qwen" => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            split(QWEN2_REGEX)?,
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
        ])),
        other => {
            return Err(LmError::Tokenizer(format!(
                "GGUF tokenizer.ggml.pre = {other:?} is not supported (supported: default, gpt2, smollm, llama-bpe, qwen2)"
            )))
        }
    };
    tk.with_pre_tokenizer(Some(pre_tok));
    tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(
        true, true, true,
    ))));
    Ok(tk)
}

/// SentencePiece (`tokenizer.ggml.model = llama`) as BPE: a merge for every way a token splits
/// into two tokens, ranked by the merged token's score (transformers' `SentencePieceExtractor`),
/// which reproduces SentencePiece's highest-score-first bigram merging; byte fallback `<0xNN>`.
fn build_spm(v: &GgufVocab, vocab: Vocab, unk_id: Option<u32>) -> Result<tokenizers::Tokenizer> {
    let scores = v.scores.as_ref().ok_or_else(|| {
        LmError::Tokenizer(
            "GGUF key tokenizer.ggml.scores is missing (needed by a llama tokenizer)".into(),
        )
    })?;
    if scores.len() != v.tokens.len() {
        return Err(LmError::Tokenizer(format!(
            "GGUF tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            v.tokens.len()
        )));
    }
    let mut merges: Vec<(u32, u32, f32)> = Vec::new();
    for (tok, &score) in v.tokens.iter().zip(scores) {
        let start = merges.len();
        for (i, _) in tok.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (vocab.get(&tok[..i]), vocab.get(&tok[i..])) {
                merges.push((l, r, score));
            }
        }
        merges[start..].sort_by_key(|&(l, r, _)| (l, r));
    }
    // Stable sort: equal scores keep vocabulary order, as in transformers.
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    let merges: Vec<(String, String)> = merges
        .into_iter()
        .map(|(l, r, _)| (v.tokens[l as usize].clone(), v.tokens[r as usize].clone()))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk_id {
        builder = builder.unk_token(v.tokens[u as usize].clone());
    }
    let bpe = builder.build().map_err(|e| {
        LmError::Tokenizer(format!(
            "cannot build the SentencePiece model from the GGUF vocabulary: {e}"
        ))
    })?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let space = Replace::new(" ", "▁").map_err(tk_err("normalizer"))?;
    let prefix = v.add_space_prefix.unwrap_or(true);
    let norm = if prefix {
        NormalizerWrapper::Sequence(tokenizers::normalizers::Sequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new("▁".into())),
            NormalizerWrapper::Replace(space),
        ]))
    } else {
        NormalizerWrapper::Replace(space)
    };
    tk.with_normalizer(Some(norm));
    let mut dec = vec![
        DecoderWrapper::Replace(Replace::new("▁", " ").map_err(tk_err("decoder"))?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if prefix {
        dec.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tk.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(dec))));
    Ok(tk)
}

/// Turns generated ids into text piece by piece: each call returns only newly completed text
/// (never half a UTF-8 character or a byte-fallback fragment), as mlx_lm's detokenizers do.
#[derive(Debug, Clone)]
pub struct StreamingDetokenizer {
    tokenizer: Tokenizer,
    tokens: Vec<u32>,
    /// Tokens before `prefix` are done; `prefix..read` decode to text already handed out.
    prefix: usize,
    read: usize,
}

impl StreamingDetokenizer {
    pub fn new(tokenizer: &Tokenizer) -> Self {
        Self {
            tokenizer: tokenizer.clone(),
            tokens: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds one token; returns the new complete text (possibly empty).
    pub fn add_token(&mut self, id: u32) -> String {
        self.tokens.push(id);
        // Decoding from the previous token on keeps context-dependent spaces right.
        let done = self
            .tokenizer
            .decode(&self.tokens[self.prefix..self.read])
            .unwrap_or_default();
        let now = self
            .tokenizer
            .decode(&self.tokens[self.prefix..])
            .unwrap_or_default();
        if now.len() > done.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&done) {
            let out = now[done.len()..].to_string();
            self.prefix = self.read;
            self.read = self.tokens.len();
            out
        } else {
            String::new()
        }
    }

    /// Whatever text is still pending (at the end of generation).
    pub fn finalize(&mut self) -> String {
        let done = self
            .tokenizer
            .decode(&self.tokens[self.prefix..self.read])
            .unwrap_or_default();
        let now = self
            .tokenizer
            .decode(&self.tokens[self.prefix..])
            .unwrap_or_default();
        self.prefix = self.tokens.len();
        self.read = self.tokens.len();
        now.strip_prefix(done.as_str())
            .map(str::to_string)
            .unwrap_or_default()
    }

    /// Every token added so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}
