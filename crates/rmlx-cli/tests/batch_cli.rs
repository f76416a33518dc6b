//! `rmlx generate --prompts-file` (JSON lines out, one per prompt, each as `generate` alone
//! would answer it) and `rmlx bench -b 1,4` (the batch engine's lines), on the tiny chat fixture.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn rmlx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmlx"))
        .args(args)
        .output()
        .expect("run rmlx")
}

fn model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/tiny_chat")
        .display()
        .to_string()
}

fn tmp_file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("rmlx-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn prompts_file_answers_each_prompt_as_generate_does() {
    let m = model();
    let file = tmp_file(
        "prompts.jsonl",
        "hello there\n\n{\"prompt\": \"what is 2+2?\", \"max_tokens\": 5}\n{\"prompt\": \"seeded\", \"temp\": 0.8, \"seed\": 7, \"max_tokens\": 6}\nplain line two\n",
    );
    let o = rmlx(&[
        "generate",
        "--model",
        &m,
        "--device",
        "cpu",
        "--prompts-file",
        file.to_str().unwrap(),
        "-n",
        "9",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let alone = |prompt: &str, extra: &[&str]| -> String {
        let mut args = vec![
            "generate", "--model", &m, "--device", "cpu", "--prompt", prompt,
        ];
        args.extend_from_slice(extra);
        let o = rmlx(&args);
        let s = String::from_utf8(o.stdout).unwrap();
        s.strip_suffix('\n').unwrap_or(&s).to_string()
    };
    let want = [
        alone("hello there", &["-n", "9"]),
        alone("what is 2+2?", &["-n", "5"]),
        alone("seeded", &["-n", "6", "--temp", "0.8", "--seed", "7"]),
        alone("plain line two", &["-n", "9"]),
    ];
    for (i, (l, w)) in lines.iter().zip(&want).enumerate() {
        assert_eq!(l["index"], i);
        assert_eq!(l["text"].as_str().unwrap(), w, "prompt {i}");
        assert!(["stop", "length"].contains(&l["finish_reason"].as_str().unwrap()));
    }
}

#[test]
fn prompts_file_errors_name_the_line() {
    let m = model();
    for (text, needle) in [
        ("ok\n{\"prompt\": 3}\n", "line 2: `prompt` must be a string"),
        (
            "{\"prompt\": \"x\", \"colour\": 1}\n",
            "line 1: unknown field `colour`",
        ),
        (
            "{\"prompt\": \"x\", \"max_tokens\": -1}\n",
            "line 1: `max_tokens` must be a non-negative integer",
        ),
        ("{not json\n", "line 1: not valid JSON"),
        ("\n\n", "holds no prompt"),
    ] {
        let f = tmp_file("bad.jsonl", text);
        let o = rmlx(&[
            "generate",
            "--model",
            &m,
            "--prompts-file",
            f.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("rmlx: error: ") && err.contains(needle),
            "{err:?} lacks {needle:?}"
        );
    }
}

#[test]
fn bench_batch_sizes_print_one_line_each() {
    let m = model();
    let o = rmlx(&[
        "bench", "--model", &m, "--device", "cpu", "-p", "8", "-g", "6", "-n", "1", "-b", "1,4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (l, b) in lines.iter().zip([1, 4]) {
        assert!(
            l.starts_with(&format!("batch_size={b}, generation_tps=")),
            "{l}"
        );
        let tps: f64 = l
            .split("generation_tps=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(tps > 0.0);
    }
}

#[test]
fn bench_batch_sizes_run_on_random_weights_without_a_tokenizer() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/tiny_chat/config.json");
    let o = rmlx(&[
        "bench",
        "--random-weights",
        "--config",
        config.to_str().unwrap(),
        "--device",
        "cpu",
        "-p",
        "8",
        "-g",
        "4",
        "-n",
        "1",
        "-b",
        "1,2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (l, b) in lines.iter().zip([1, 2]) {
        let field = |name: &str| -> f64 {
            l.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {l:?}"))
        };
        assert!(l.starts_with(&format!("batch_size={b}, ")), "{l}");
        assert!(
            field("generation_tps") > 0.0 && field("prompt_tps") > 0.0,
            "{l}"
        );
    }
}
