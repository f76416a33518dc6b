//! Helpers shared by the model test binaries.

/// The largest |got − want| and the scale it is judged against: max(1, max |want|).
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    (worst, scale)
}

/// |got − want| ≤ `rel` · max(1, max|want|).
pub fn assert_logits_close_rel(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (worst, scale) = max_abs_diff(got, want);
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

/// A tiny fixture's MLX reference (`reference.safetensors` in `dir`): its prompt tokens, the
/// logits MLX gave for them (flattened `[1, L, V]`) and V.
pub fn mlx_reference(dir: &std::path::Path) -> (Vec<u32>, Vec<f32>, usize) {
    let (t, _) = rmlx::io::load_safetensors(dir.join("reference.safetensors")).unwrap();
    let get = |n: &str| t.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let logits = get("logits");
    (
        get("tokens").to_vec::<u32>().unwrap(),
        logits.to_vec::<f32>().unwrap(),
        logits.shape()[2],
    )
}
