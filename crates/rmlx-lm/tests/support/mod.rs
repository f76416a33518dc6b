//! Helpers shared by the model test binaries.

/// |got − want| ≤ `rel` · max(1, max|want|).
pub fn assert_logits_close_rel(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if std::env::var_os("RMLX_TEST_VERBOSE").is_some() {
        eprintln!(
            "{what}: max |Δ| {worst} (scale {scale}, {:.4} of it)",
            worst / scale
        );
    }
    assert!(
        worst <= rel * scale,
        "{what}: max |Δ| {worst} > {} (scale {scale})",
        rel * scale
    );
}
