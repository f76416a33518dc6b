//! `Display` in MLX's format: `array([[1, 2], [3, 4]], dtype=int32)`; evaluates the array.

use crate::array::Array;
use crate::dtype::Dtype;

fn fmt_elem(v: f64, dtype: Dtype) -> String {
    match dtype {
        Dtype::Bool => if v != 0.0 { "true" } else { "false" }.to_string(),
        d if d.is_float() => {
            if v.is_nan() {
                "nan".into()
            } else if v.is_infinite() {
                if v > 0.0 {
                    "inf".into()
                } else {
                    "-inf".into()
                }
            } else {
                // f32 round trip keeps MLX-like short output
                format!("{}", v as f32)
            }
        }
        _ => format!("{}", v as i64),
    }
}

fn write_nested(out: &mut String, vals: &[f64], shape: &[usize], dtype: Dtype, indent: usize) {
    if shape.is_empty() {
        out.push_str(&fmt_elem(vals[0], dtype));
        return;
    }
    out.push('[');
    let n = shape[0];
    let inner: usize = shape[1..].iter().product();
    for i in 0..n {
        if i > 0 {
            out.push(',');
            if shape.len() > 1 {
                out.push('\n');
                out.push_str(&" ".repeat(indent + 1));
            } else {
                out.push(' ');
            }
        }
        if n > 12 && i == 3 && shape.len() == 1 {
            out.push_str("...,");
            out.push(' ');
        }
        if n > 12 && (3..n - 3).contains(&i) {
            continue;
        }
        write_nested(
            out,
            &vals[i * inner..(i + 1) * inner],
            &shape[1..],
            dtype,
            indent + 1,
        );
    }
    out.push(']');
}

impl std::fmt::Display for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vals = match self.to_vec::<f32>() {
            Ok(v) => v.into_iter().map(|x| x as f64).collect::<Vec<_>>(),
            Err(e) => return write!(f, "<array error: {e}>"),
        };
        let mut s = String::from("array(");
        write_nested(&mut s, &vals, self.shape(), self.dtype(), 6);
        s.push_str(&format!(", dtype={})", self.dtype()));
        f.write_str(&s)
    }
}
