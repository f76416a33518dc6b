//! `ops::quantized_swiglu`, `silu(g) * u` of a fused gate/up product as one op: on every device
//! bit for bit against its composition (the product, its halves, `silu_mul`), across the row
//! counts a decode step has (the GPU's tensor-core kernel at 1..8 rows, with and without the
//! norm, both group sizes and half types, a width that is no multiple of the kernel's tiles),
//! and its argument checks.

mod common;

use common::for_each_device;
use rmlx::{ops, Array, Dtype};

use common::det_array as arr;

fn bits(a: &Array) -> Vec<u32> {
    ops::astype(a, Dtype::F32)
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn fused_equals_product_then_silu_mul() {
    // K a multiple of 256 and long enough (m·K > 2,048), 2H in 4,096..=32,768: every row count
    // takes the tensor-core kernel on a GPU; H = 2,080 leaves a partial tile
    let (h, k) = (2080, 2304);
    for_each_device(|dev| {
        for (dtype, gs, normed) in [
            (Dtype::BF16, 64, false),
            (Dtype::BF16, 64, true),
            (Dtype::BF16, 128, true),
            (Dtype::F16, 64, false),
        ] {
            let w = arr(&[2 * h, k], 7, 0.2, dtype);
            let (wq, s, b) = ops::quantize(&w, gs, 4).unwrap();
            let nw = arr(&[k], 9, 1.0, dtype);
            let norm = normed.then_some((&nw, 1e-5f32));
            for m in 1..=8 {
                let x = arr(&[m, 1, k], 20 + m as u32, 1.0, dtype);
                let got = ops::quantized_swiglu(&x, norm, &wq, &s, &b, gs, 4).unwrap();
                let want = ops::quantized_swiglu_fallback(&x, norm, &wq, &s, &b, gs, 4).unwrap();
                assert_eq!(got.shape(), &[m, 1, h]);
                assert_eq!(got.dtype(), dtype);
                assert!(
                    bits(&got) == bits(&want),
                    "{dev:?} {dtype} gs {gs} norm {normed} rows {m}: fused and composed differ"
                );
            }
        }
    });
}

#[test]
fn bad_arguments_are_errors() {
    let w = arr(&[6, 64], 1, 0.2, Dtype::F32);
    let (wq, s, b) = ops::quantize(&w, 64, 4).unwrap();
    // x's width must be the layer's K
    let e = ops::quantized_swiglu(&arr(&[2, 32], 2, 1.0, Dtype::F32), None, &wq, &s, &b, 64, 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[quantized_matmul]"), "{e}");
    // an odd number of output rows is no gate/up pair
    let w = arr(&[5, 64], 1, 0.2, Dtype::F32);
    let (wq, s, b) = ops::quantize(&w, 64, 4).unwrap();
    let e = ops::quantized_swiglu(&arr(&[2, 64], 2, 1.0, Dtype::F32), None, &wq, &s, &b, 64, 4)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[quantized_swiglu]") && e.contains("even"),
        "{e}"
    );
}
