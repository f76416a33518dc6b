//! The `rmlx` binary as scripts see it: exit codes, one-line errors on stderr, only the text on
//! stdout, mlx_lm's statistics and bench lines. Tests needing SmolLM2 skip when it is absent
//! (scripts/fetch_models.sh fetches it).

use std::path::PathBuf;
use std::process::{Command, Output};

fn rmlx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmlx"))
        .args(args)
        .output()
        .expect("run rmlx")
}

fn smollm2() -> Option<String> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache = std::env::var_os("RMLX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/rmlx"));
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let p = [
        cache.join("models").join(name),
        home.join("anchors/models").join(name),
    ]
    .into_iter()
    .find(|p| p.is_file());
    if p.is_none() {
        eprintln!("SKIPPED: {name} not found (run scripts/fetch_models.sh)");
    }
    p.map(|p| p.display().to_string())
}

/// Exit code 1, nothing on stdout, one `rmlx: error:` line on stderr containing `needle`.
fn assert_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(
        o.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(
        err.starts_with("rmlx: error: ") && err.contains(needle),
        "{err:?}"
    );
}

#[test]
fn errors_are_one_line_with_nonzero_exit() {
    assert_error(
        &rmlx(&[
            "generate",
            "--model",
            "/nonexistent/model.gguf",
            "--prompt",
            "hi",
        ]),
        "/nonexistent/model.gguf",
    );
    assert_error(
        &rmlx(&["serve", "--model", "/nonexistent/m.gguf"]),
        "/nonexistent/m.gguf",
    );
    // Without a GPU, --device gpu names the missing device; with one, the bad model path.
    let o = rmlx(&[
        "generate", "--device", "gpu", "--model", "/tmp", "--prompt", "hi",
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_error(
        &o,
        if err.contains("no CUDA device") {
            "--device gpu: no CUDA device was found"
        } else {
            "/tmp"
        },
    );
    // A corrupt GGUF and a directory without a model.
    let dir = std::env::temp_dir().join(format!("rmlx_cli_bad_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    assert_error(
        &rmlx(&[
            "generate",
            "--model",
            bad.to_str().unwrap(),
            "--prompt",
            "hi",
        ]),
        "bad.gguf",
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_error(
        &rmlx(&[
            "generate",
            "--model",
            empty.to_str().unwrap(),
            "--prompt",
            "hi",
        ]),
        "config.json",
    );
    let o = rmlx(&[
        "convert",
        "--model",
        dir.to_str().unwrap(),
        "--out",
        "/tmp/x",
        "--dtype",
        "float8",
    ]);
    assert_error(&o, "--dtype");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn generate_prints_only_the_text() {
    let Some(m) = smollm2() else { return };
    // Both references agree on this greedy continuation (../shared/reference); EOS is not printed.
    let o = rmlx(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        "What is 2+2?",
        "--max-tokens",
        "32",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "The answer to this classic math problem is 4.\n"
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = rmlx(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        "The capital of France is",
        "--ignore-chat-template",
        "-n",
        "3",
        "--verbose",
    ]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8(o.stdout).unwrap(), " Paris.\n\n");
    let err = String::from_utf8(o.stderr).unwrap();
    for want in [
        "Prompt: 5 tokens, ",
        "Generation: 3 tokens, ",
        " tokens-per-sec",
        "Peak memory: ",
        " GB",
    ] {
        assert!(err.contains(want), "{want:?} missing from {err:?}");
    }
}

#[test]
fn bench_prints_mlx_lm_lines() {
    let Some(m) = smollm2() else { return };
    let o = rmlx(&["bench", "--model", &m, "-p", "16", "-g", "4", "-n", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let fields = |l: &str, prefix: &str, keys: &[&str]| {
        let rest = l
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{l:?} lacks {prefix:?}"));
        let parts: Vec<&str> = rest.split(", ").collect();
        assert_eq!(parts.len(), keys.len(), "{l}");
        for (p, k) in parts.iter().zip(keys) {
            let v = p
                .strip_prefix(&format!("{k}="))
                .unwrap_or_else(|| panic!("{p:?} is not {k}=..."));
            assert_eq!(
                v.split('.').nth(1).map(str::len),
                Some(3),
                "3 decimals: {v}"
            );
            assert!(v.parse::<f64>().unwrap() >= 0.0);
        }
    };
    let trial = ["prompt_tps", "generation_tps", "peak_memory", "total_time"];
    fields(lines[0], "Trial 1: ", &trial);
    fields(lines[1], "Trial 2: ", &trial);
    fields(lines[2], "Averages: ", &trial[..3]);
}

/// `rmlx bench --kv-bits 8`: runs on a quantized cache, its roofline counts the packed KV bytes
/// (8 bits plus a scale and a bias per group of 64: about half of bf16's); bad values and batch
/// lists are one-line errors.
#[test]
fn bench_with_a_quantized_cache() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench/configs/smollm2-135m-q4.json"
    );
    let base = [
        "bench",
        "--random-weights",
        "--config",
        config,
        "--device",
        "cpu",
        "-p",
        "16",
        "-g",
        "4",
        "-n",
        "1",
    ];
    let kv_mb = |extra: &[&str]| -> f64 {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = rmlx(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(out.contains("Averages: prompt_tps="), "{out}");
        let roof = out.lines().find(|l| l.starts_with("Roofline:")).unwrap();
        let mb = roof
            .split(" MB KV")
            .next()
            .unwrap()
            .rsplit(", ")
            .next()
            .unwrap();
        mb.parse().unwrap_or_else(|_| panic!("{roof}"))
    };
    let (plain, packed) = (kv_mb(&[]), kv_mb(&["--kv-bits", "8"]));
    assert!(
        packed > 0.0 && packed < 0.6 * plain,
        "{packed} MB against {plain} MB"
    );
    let with = |extra: &[&str]| rmlx(&base.iter().chain(extra).copied().collect::<Vec<_>>());
    assert_error(&with(&["--kv-bits", "3"]), "--kv-bits must be 4 or 8");
    assert_error(
        &with(&["--kv-bits", "8", "-b", "1,2"]),
        "--kv-bits applies to a single run",
    );
}

#[test]
fn perplexity_prints_one_number() {
    let Some(m) = smollm2() else { return };
    let f = std::env::temp_dir().join(format!("rmlx_ppl_{}.txt", std::process::id()));
    std::fs::write(
        &f,
        "The quick brown fox jumps over the lazy dog. ".repeat(8),
    )
    .unwrap();
    let o = rmlx(&[
        "perplexity",
        "--model",
        &m,
        "--text-file",
        f.to_str().unwrap(),
        "--context",
        "32",
    ]);
    std::fs::remove_file(&f).ok();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let v: f64 = out
        .trim()
        .strip_prefix("Perplexity: ")
        .expect(&out)
        .parse()
        .unwrap();
    // Repeated text is easy after its first window: well under the vocabulary size.
    assert!(v > 1.0 && v < 100.0, "{v}");
}

/// `rmlx serve --random-weights --config FILE` (the load test's server): a model of that shape
/// answers a chat request with words of its ids-only tokenizer.
#[test]
fn serve_with_random_weights_answers_chat() {
    use std::io::{BufRead, BufReader, Read, Write};
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench/configs/smollm2-135m-q4.json"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmlx"))
        .args([
            "serve",
            "--random-weights",
            "--config",
            config,
            "--device",
            "cpu",
            "--port",
            "0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start rmlx serve");
    // Kill the server whatever happens below.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let child = Kill(child);
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split([',', ' ']).next().unwrap().to_string();
        }
    };
    let body = r#"{"messages":[{"role":"user","content":"<5> <6> <7> hello"}],"max_tokens":7}"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let json: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    // Random weights stop at max_tokens unless they happen to pick the config's EOS id.
    let n = json["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=7).contains(&n), "{json}");
    let text = json["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.split_whitespace()
            .all(|w| w.starts_with('<') && w.ends_with('>')),
        "{text:?}"
    );
    assert_eq!(json["model"], "smollm2-135m-q4.json", "{json}");
    drop(child);
}
