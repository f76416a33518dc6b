//! Tokenizers built from real GGUF files encode exactly as llama.cpp does (reference ids made
//! by scripts/fixtures/tokenizer_refs.py with llama-cpp-python) and decode back. The models come
//! from scripts/fetch_models.sh; a test whose model is absent says so and passes.

use rmlx_lm::chat_template::ChatMessage;
use rmlx_lm::tokenizer::{StreamingDetokenizer, Tokenizer};
use std::path::PathBuf;

/// `<cache>/models/<name>` (cache = $RMLX_CACHE or ~/.cache/rmlx), else ~/anchors/models/<name>.
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

fn load(name: &str) -> Option<Tokenizer> {
    let g = rmlx::io::GgufFile::open(model(name)?).unwrap();
    Some(Tokenizer::from_gguf(&g).unwrap())
}

const TEXTS: &[&str] = &[
    "The capital of France is",
    "Hello world",
    "  leading spaces and  double  spaces",
    "line one\nline two\n\n\nthree",
    "héllo wörld 12345 🚀 日本語のテキスト",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "code:\n    def f(x):\n        return x**2  # square",
    "Ünïcödé ½ ∑ ∞ ≠ →",
    "a\tb\r\nc",
    "",
];

/// llama.cpp's ids for TEXTS (BOS as the GGUF's add_bos_token says).
const SMOLLM2_IDS: &[&[u32]] = &[
    &[504, 3575, 282, 4649, 314],
    &[19556, 905],
    &[216, 2899, 5600, 284, 216, 5561, 216, 5600],
    &[1311, 582, 198, 1311, 827, 1116, 198, 16347],
    &[
        88, 2756, 31394, 267, 29989, 400, 216, 33, 34, 35, 36, 37, 15107, 244, 218, 17097, 241,
        115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226,
    ],
    &[
        44, 3738, 79, 1714, 79, 20589, 46, 4093, 198, 1780, 314, 216, 34, 27, 34, 15137, 486, 79,
        1714, 79, 20589, 46, 198, 44, 3738, 79, 1714, 79, 20589, 46, 3980, 198,
    ],
    &[
        4635, 42, 472, 753, 275, 24, 104, 727, 448, 1003, 1792, 828, 34, 216, 907, 5222,
    ],
    &[
        142, 246, 94, 25972, 83, 7466, 84, 2756, 216, 16738, 19995, 235, 19995, 248, 21004, 250,
        17822,
    ],
    &[81, 197, 82, 201, 198, 83],
    &[],
];
const GEMMA3_IDS: &[&[u32]] = &[
    &[2, 818, 5279, 529, 7001, 563],
    &[2, 9259, 1902],
    &[2, 138, 26016, 9952, 532, 138, 7902, 138, 35220],
    &[2, 1257, 886, 107, 1257, 1156, 109, 19891],
    &[
        2, 236754, 7869, 844, 515, 4010, 671, 236743, 236770, 236778, 236800, 236812, 236810,
        236743, 242015, 33375, 238582, 236945, 95830,
    ],
    &[
        2, 105, 2364, 107, 3689, 563, 236743, 236778, 236862, 236778, 236881, 106, 107, 105, 4368,
        107,
    ],
    &[
        2, 3970, 236787, 107, 140, 2063, 517, 236769, 236781, 1473, 107, 144, 2060, 1123, 1018,
        236778, 138, 236865, 6281,
    ],
    &[
        2, 238194, 236749, 238527, 236755, 55515, 236859, 47041, 76689, 95713, 193600, 16130,
    ],
    &[2, 236746, 255968, 236763, 251, 107, 236755],
    &[2],
];

fn check_all(tk: &Tokenizer, expected: &[&[u32]]) {
    for (text, want) in TEXTS.iter().zip(expected) {
        let got = tk.encode(text, true).unwrap();
        assert_eq!(&got, want, "encoding {text:?}");
        // Decoding without the special tokens gives the text back.
        let skip = usize::from(tk.adds_bos());
        assert_eq!(tk.decode(&got[skip..]).unwrap(), *text, "decoding {text:?}");
        // Streaming pieces add up to the whole decode.
        let mut d = StreamingDetokenizer::new(tk);
        let mut s: String = got[skip..].iter().map(|&t| d.add_token(t)).collect();
        s.push_str(&d.finalize());
        assert_eq!(s, *text, "streaming {text:?}");
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    let Some(tk) = load("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    check_all(&tk, SMOLLM2_IDS);
    assert_eq!(tk.bos_token_id(), Some(1));
    assert!(tk.eos_token_ids().contains(&2), "{:?}", tk.eos_token_ids());
    assert!(!tk.adds_bos());
}

/// The two prompts of ../shared/reference/reference_smollm2_q4_1.json.
#[test]
fn smollm2_reference_prompts() {
    let Some(tk) = load("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    assert_eq!(
        tk.encode("The capital of France is", true).unwrap(),
        [504, 3575, 282, 4649, 314]
    );
    let chat = tk
        .apply_chat_template(&[ChatMessage::new("user", "What is 2+2?")], true)
        .unwrap();
    let ids = tk.encode(&chat, false).unwrap();
    assert_eq!(
        ids,
        [
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
            407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520,
            9531, 198
        ]
    );
}

#[test]
fn gemma3_matches_llama_cpp() {
    let Some(tk) = load("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    check_all(&tk, GEMMA3_IDS);
    assert_eq!(tk.bos_token_id(), Some(2));
    let eos = tk.eos_token_ids();
    assert!(
        eos.contains(&1) && eos.contains(&106),
        "<eos> and <end_of_turn> end generation: {eos:?}"
    );
}

/// A GGUF tokenizer written as tokenizer.json (what convert does) loads back through from_dir
/// and encodes the same.
#[test]
fn gguf_tokenizer_json_round_trip() {
    let Some(tk) = load("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("rmlx_tok_rt_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tk.to_json().unwrap()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        tk.config_json().to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [2, 0]}"#,
    )
    .unwrap();
    let back = Tokenizer::from_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    for text in TEXTS {
        assert_eq!(
            back.encode(text, true).unwrap(),
            tk.encode(text, true).unwrap(),
            "{text:?}"
        );
    }
    assert_eq!(back.eos_token_ids(), &[0, 2]);
    assert_eq!(back.chat_template(), tk.chat_template());
}

#[test]
fn from_dir_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("rmlx_tok_bad_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = Tokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::write(dir.join("tokenizer.json"), "{not json").unwrap();
    let e = Tokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ids_only_tokenizer_round_trips_ids() {
    let t = Tokenizer::ids_only(100).unwrap();
    assert_eq!(t.vocab_size(), 100);
    assert!(t.eos_token_ids().is_empty() && t.bos_token_id().is_none());
    assert_eq!(t.encode("<7> <42>  <99>", true).unwrap(), [7, 42, 99]);
    assert_eq!(t.decode(&[7, 42, 99]).unwrap(), "<7> <42> <99>");
    let mut d = StreamingDetokenizer::new(&t);
    let text: String = [3, 0, 5].iter().map(|&i| d.add_token(i)).collect();
    assert_eq!(text + &d.finalize(), "<3> <0> <5>");
    // A plain template so chat requests work on random-weight servers; other words are id 0.
    let chat = t
        .apply_chat_template(&[ChatMessage::new("user", "<5> hi")], true)
        .unwrap();
    assert_eq!(chat, "user: <5> hi\nassistant:");
    assert_eq!(t.encode(&chat, false).unwrap(), [0, 5, 0, 0]);
    assert!(Tokenizer::ids_only(0).is_err());
}
