//! Sampler statistics and semantics (mlx-lm's `sample_utils.py`).

use rmlx::Array;
use rmlx_lm::sample::{Sampler, SamplerSettings};

fn logits(rows: &[Vec<f32>]) -> Array {
    let v = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Array::from_slice(&flat, &[rows.len(), v]).unwrap()
}

/// A fixed pseudo-random logits row of `v` entries.
fn row(v: usize, salt: u32) -> Vec<f32> {
    (0..v as u32)
        .map(|i| {
            ((i.wrapping_mul(2_654_435_761).wrapping_add(salt * 97)) % 1000) as f32 / 100.0 - 5.0
        })
        .collect()
}

fn softmax(x: &[f32], temp: f32) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = x.iter().map(|&v| (((v - m) / temp) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn settings(temp: f32) -> SamplerSettings {
    SamplerSettings {
        temp,
        seed: Some(7),
        ..Default::default()
    }
}

fn counts(s: &mut Sampler, l: &Array, n: usize, v: usize) -> Vec<usize> {
    let mut c = vec![0usize; v];
    for _ in 0..n {
        let (t, _) = s.sample(l, &[]).unwrap();
        c[t[0] as usize] += 1;
    }
    c
}

#[test]
fn greedy_is_argmax_per_row_and_logprobs_are_log_softmax() {
    let rows = vec![row(50, 1), row(50, 2), row(50, 3)];
    let mut s = Sampler::new(SamplerSettings::default());
    let (toks, lp) = s.sample(&logits(&rows), &[]).unwrap();
    assert_eq!(lp.shape(), &[3, 50]);
    let lp = lp.to_vec::<f32>().unwrap();
    for (r, x) in rows.iter().enumerate() {
        let am = (0..50).fold(0, |b, i| if x[i] > x[b] { i } else { b });
        assert_eq!(toks[r] as usize, am);
        let p = softmax(x, 1.0);
        for i in 0..50 {
            assert!((lp[r * 50 + i] as f64 - p[i].ln()).abs() < 1e-4);
        }
    }
}

#[test]
fn temperature_sampling_follows_the_distribution() {
    let x = vec![1.0f32, 0.0, -1.0, 2.0];
    let mut s = Sampler::new(settings(0.7));
    let n = 20_000;
    let c = counts(&mut s, &logits(std::slice::from_ref(&x)), n, 4);
    let p = softmax(&x, 0.7);
    for i in 0..4 {
        let f = c[i] as f64 / n as f64;
        // 5 standard deviations of a binomial proportion
        let sd = (p[i] * (1.0 - p[i]) / n as f64).sqrt();
        assert!(
            (f - p[i]).abs() < 5.0 * sd + 1e-3,
            "token {i}: {f} vs {}",
            p[i]
        );
    }
}

#[test]
fn top_k_never_leaves_the_top_k() {
    let v = 1000;
    let x = row(v, 5);
    let mut idx: Vec<usize> = (0..v).collect();
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]));
    let top: std::collections::HashSet<usize> = idx[..5].iter().copied().collect();
    let mut s = Sampler::new(SamplerSettings {
        top_k: 5,
        ..settings(2.0)
    });
    let c = counts(&mut s, &logits(&[x]), 2000, v);
    for (i, &n) in c.iter().enumerate() {
        assert!(
            n == 0 || top.contains(&i),
            "token {i} outside the top 5 drawn {n} times"
        );
    }
    assert!(
        top.iter().all(|&i| c[i] > 0),
        "high temperature should reach all of the top 5"
    );
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_the_mass() {
    // probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1} (0.5 < 0.7 <= 0.8).
    let p = [0.5f32, 0.3, 0.15, 0.05];
    let x: Vec<f32> = p.iter().map(|v| v.ln()).collect();
    let mut s = Sampler::new(SamplerSettings {
        top_p: 0.7,
        ..settings(1.0)
    });
    let n = 10_000;
    let c = counts(&mut s, &logits(std::slice::from_ref(&x)), n, 4);
    assert_eq!(c[2] + c[3], 0, "{c:?}");
    let f0 = c[0] as f64 / n as f64;
    assert!((f0 - 0.625).abs() < 0.03, "renormalised 0.5/0.8, got {f0}");
    // top_p 0.85 also keeps token 2.
    let mut s = Sampler::new(SamplerSettings {
        top_p: 0.85,
        ..settings(1.0)
    });
    let c = counts(&mut s, &logits(&[x]), 4000, 4);
    assert_eq!(c[3], 0);
    assert!(c[2] > 0);
}

#[test]
fn top_p_on_a_large_vocabulary_matches_a_full_sort() {
    // exercises the growing sorted prefix (more than 256 tokens needed)
    let v = 5000;
    let x: Vec<f32> = (0..v).map(|i| -((i * 7 % v) as f32) * 1e-3).collect();
    let pr = softmax(&x, 1.0);
    let mut idx: Vec<usize> = (0..v).collect();
    idx.sort_by(|&a, &b| pr[b].total_cmp(&pr[a]));
    let (mut mass, mut kept) = (0.0, std::collections::HashSet::new());
    for &i in &idx {
        if mass >= 0.9 {
            break;
        }
        mass += pr[i];
        kept.insert(i);
    }
    assert!(kept.len() > 256);
    let mut s = Sampler::new(SamplerSettings {
        top_p: 0.9,
        ..settings(1.0)
    });
    let c = counts(&mut s, &logits(&[x]), 3000, v);
    for (i, &n) in c.iter().enumerate() {
        assert!(n == 0 || kept.contains(&i), "token {i} outside the nucleus");
    }
}

#[test]
fn min_p_drops_tokens_below_the_scaled_threshold() {
    // p = [0.6, 0.25, 0.1, 0.05]; min_p 0.2 -> threshold 0.12: keeps {0, 1}.
    let x: Vec<f32> = [0.6f32, 0.25, 0.1, 0.05].iter().map(|v| v.ln()).collect();
    let mut s = Sampler::new(SamplerSettings {
        min_p: 0.2,
        ..settings(1.0)
    });
    let c = counts(&mut s, &logits(std::slice::from_ref(&x)), 4000, 4);
    assert_eq!(c[2] + c[3], 0, "{c:?}");
    assert!(c[1] > 0);
    // min_tokens_to_keep overrides the threshold
    let mut s = Sampler::new(SamplerSettings {
        min_p: 0.9,
        min_tokens_to_keep: 3,
        ..settings(1.0)
    });
    let c = counts(&mut s, &logits(&[x]), 4000, 4);
    assert_eq!(c[3], 0);
    assert!(c[2] > 0, "{c:?}");
}

#[test]
fn seeds_reproduce_and_differ() {
    let l = logits(&[row(300, 1), row(300, 2)]);
    let run = |seed: u64| {
        let mut s = Sampler::new(SamplerSettings {
            seed: Some(seed),
            top_k: 50,
            ..settings(1.5)
        });
        (0..30)
            .flat_map(|_| s.sample(&l, &[]).unwrap().0)
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
    // a sampler's stream advances: consecutive draws are not all the same
    let a = run(42);
    assert!(a.iter().step_by(2).any(|&t| t != a[0]));
}

#[test]
fn repetition_penalty_pushes_recent_tokens_down() {
    let x = vec![2.0f32, -1.0, 1.9, -1.1];
    // token 0 (positive) and 1 (negative) are in the recent history; token 3 only beyond the window
    let hist = vec![vec![3, 9999, 0, 1, 1]];
    let s0 = SamplerSettings {
        repetition_penalty: Some(2.0),
        repetition_context_size: 3,
        ..Default::default()
    };
    let mut s = Sampler::new(s0);
    let (t, lp) = s.sample(&logits(std::slice::from_ref(&x)), &hist).unwrap();
    assert_eq!(t, vec![2], "2.0 / 2 = 1.0 now loses to 1.9");
    let lp = lp.to_vec::<f32>().unwrap();
    let expect = softmax(&[1.0, -2.0, 1.9, -1.1], 1.0);
    for i in 0..4 {
        assert!((lp[i] as f64 - expect[i].ln()).abs() < 1e-5, "{i}");
    }
}

#[test]
fn logit_bias_is_added_before_everything() {
    let x = vec![0.0f32, 1.0, 0.5];
    let mut s = Sampler::new(SamplerSettings {
        logit_bias: vec![(0, 3.0)],
        ..Default::default()
    });
    assert_eq!(s.sample(&logits(&[x]), &[]).unwrap().0, vec![0]);
}

#[test]
fn bad_settings_and_inputs_are_errors() {
    let l = logits(&[vec![0.0, 1.0]]);
    for st in [
        SamplerSettings {
            temp: -1.0,
            ..Default::default()
        },
        SamplerSettings {
            top_p: 1.5,
            ..Default::default()
        },
        SamplerSettings {
            min_p: -0.1,
            ..Default::default()
        },
        SamplerSettings {
            min_tokens_to_keep: 0,
            ..Default::default()
        },
        SamplerSettings {
            repetition_penalty: Some(f32::NAN),
            ..Default::default()
        },
        SamplerSettings {
            logit_bias: vec![(2, 1.0)],
            ..Default::default()
        },
    ] {
        let e = Sampler::new(st.clone())
            .sample(&l, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[sample]"), "{st:?}: {e}");
    }
    let mut s = Sampler::new(SamplerSettings::default());
    assert!(
        s.sample(&l, &[vec![], vec![]]).is_err(),
        "history rows must match"
    );
    let all_nan = logits(&[vec![f32::NAN, f32::NEG_INFINITY]]);
    assert!(s.sample(&all_nan, &[]).is_err());
}
