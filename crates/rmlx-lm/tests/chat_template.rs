//! Chat templates from the GGUF files render exactly as transformers' apply_chat_template
//! (jinja2 with trim_blocks/lstrip_blocks; references made by scripts/fixtures/tokenizer_refs.py).

use rmlx_lm::chat_template::{render, ChatMessage, TemplateContext};
use rmlx_lm::tokenizer::{Tokenizer, GEMMA3_TEMPLATE};
use std::path::PathBuf;

fn model(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache = std::env::var_os("RMLX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/rmlx"));
    let found = [
        cache.join("models").join(name),
        home.join("anchors/models").join(name),
    ]
    .into_iter()
    .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: {name} not found (run scripts/fetch_models.sh --gemma)");
    }
    found
}

fn convo() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", " What is 2+2? "),
        ChatMessage::new("assistant", "4"),
        ChatMessage::new("user", "And 3+3?"),
    ]
}

const SMOLLM2_CHAT: &str = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n What is 2+2? <|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n";
const GEMMA3_CHAT: &str = "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n<start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\n";

#[test]
fn gemma3_template_matches_jinja2() {
    // Needs no model file: the template is built in.
    let ctx = TemplateContext {
        bos_token: Some("<bos>"),
        eos_token: Some("<eos>"),
    };
    assert_eq!(
        render(GEMMA3_TEMPLATE, &convo(), true, &ctx).unwrap(),
        GEMMA3_CHAT
    );
    // Roles out of order raise the template's own exception.
    let bad = [ChatMessage::new("assistant", "hi")];
    let e = render(GEMMA3_TEMPLATE, &bad, true, &ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Conversation roles must alternate"), "{e}");
}

#[test]
fn smollm2_gguf_template_matches_jinja2() {
    let Some(p) = model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let tk = Tokenizer::from_gguf(&rmlx::io::GgufFile::open(p).unwrap()).unwrap();
    assert_eq!(
        tk.apply_chat_template(&convo(), true).unwrap(),
        SMOLLM2_CHAT
    );
    // Without a system message the template adds its default one.
    let s = tk
        .apply_chat_template(&[ChatMessage::new("user", "hi")], false)
        .unwrap();
    assert!(
        s.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"),
        "{s}"
    );
    assert!(s.ends_with("<|im_start|>user\nhi<|im_end|>\n"), "{s}");
}

#[test]
fn gemma3_gguf_uses_builtin_template() {
    let Some(p) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let tk = Tokenizer::from_gguf(&rmlx::io::GgufFile::open(p).unwrap()).unwrap();
    assert_eq!(tk.apply_chat_template(&convo(), true).unwrap(), GEMMA3_CHAT);
}
