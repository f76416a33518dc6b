//! Chat templates: the Jinja template a model ships (`tokenizer_config.json`'s `chat_template`
//! or GGUF's `tokenizer.chat_template`) rendered with `minijinja`, the way transformers'
//! `apply_chat_template` does it: `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token`, `raise_exception`, and the Python string methods (`strip`, `split`,
//! `startswith`, ...) HF templates call, through `minijinja-contrib`'s pycompat.

use crate::error::{LmError, Result};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// One turn of a conversation: `role` is `system`, `user` or `assistant` (or whatever the
/// template accepts), `content` its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What the template may refer to besides the messages.
#[derive(Debug, Clone, Default)]
pub struct TemplateContext<'a> {
    pub bos_token: Option<&'a str>,
    pub eos_token: Option<&'a str>,
}

/// `raise_exception("msg")` as transformers defines it: abort rendering with that message.
fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// Renders `template` over `messages` exactly as transformers' `apply_chat_template(...,
/// tokenize=False)` does (trim_blocks and lstrip_blocks on, as HF sets them).
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    ctx: &TemplateContext<'_>,
) -> Result<String> {
    let mut env = Environment::new();
    // transformers renders with `trim_blocks=True, lstrip_blocks=True`.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // Python's `str.strip()`, `.split()`, `.startswith()`, dict `.items()`, ... on values.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_template("chat", template).map_err(|e| {
        LmError::Template(format!("cannot parse the chat template: {}", detail(&e)))
    })?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| LmError::Template(detail(&e)))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => ctx.bos_token.unwrap_or(""),
        eos_token => ctx.eos_token.unwrap_or(""),
    };
    tmpl.render(ctx).map_err(|e| {
        LmError::Template(format!(
            "rendering the chat template failed: {}",
            detail(&e)
        ))
    })
}

/// A one-line description of a minijinja error (kind, message and line).
fn detail(e: &Error) -> String {
    let mut s = e.to_string();
    if let Some(line) = e.line() {
        if !s.contains("line") {
            s.push_str(&format!(" (template line {line})"));
        }
    }
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn chatml_renders() {
        let m = [ChatMessage::new("user", "hi")];
        let s = render(CHATML, &m, true, &TemplateContext::default()).unwrap();
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let s = render(CHATML, &m, false, &TemplateContext::default()).unwrap();
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n");
    }

    #[test]
    fn python_methods_and_raise() {
        let t = "{{ messages[0]['content'] | trim }}|{{ messages[0].content.strip() }}|{{ messages[0].content.startswith(' a') }}|{{ ' x y '.split() | join(',') }}";
        let m = [ChatMessage::new("user", " a b ")];
        let s = render(t, &m, false, &TemplateContext::default()).unwrap();
        // Jinja2 (so transformers) prints Python's `True`; minijinja's pycompat mode does too.
        assert_eq!(s, "a b|a b|True|x,y");
        let t = "{% if messages[0].role != 'system' %}{{ raise_exception('need a system message') }}{% endif %}";
        let e = render(t, &m, false, &TemplateContext::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("need a system message"), "{e}");
        assert!(render("{% if %}", &m, false, &TemplateContext::default()).is_err());
    }
}
