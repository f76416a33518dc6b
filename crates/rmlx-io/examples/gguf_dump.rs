//! Dev check: imports every tensor of a GGUF file and writes its dequantized f32 values (plain
//! scalar `scale * q + bias`) as `<out>/<name>.npy`, plus `<out>/index.txt` (name, type, group,
//! bits, scale dtype). `gguf_check.py` compares them with gguf-py's dequantization.
//!
//! cargo run --release -p rmlx-io --example gguf_dump -- model.gguf /tmp/out

use rmlx_core::Array;
use rmlx_io::{save_npy, GgufFile, Tensor};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, out] = args.as_slice() else {
        return Err("usage: gguf_dump <model.gguf> <out-dir>".into());
    };
    std::fs::create_dir_all(out)?;
    let f = GgufFile::open(path)?;
    let mut index = std::fs::File::create(format!("{out}/index.txt"))?;
    for t in f.tensors() {
        let tensor = match f.load(&t.name) {
            Ok(x) => x,
            Err(e) => {
                writeln!(index, "{}\t{}\tREFUSED\t{e}", t.name, t.ggml_type)?;
                continue;
            }
        };
        let desc = match &tensor {
            Tensor::Dense(a) => format!("dense\t{}", a.dtype()),
            Tensor::Quantized {
                scales,
                group_size,
                bits,
                ..
            } => format!("g{group_size}\tb{bits}\t{}", scales.dtype()),
        };
        let v = tensor.to_f32_vec()?;
        save_npy(
            format!("{out}/{}.npy", t.name),
            &Array::from_slice(&v, &tensor.shape())?,
        )?;
        writeln!(index, "{}\t{}\t{desc}", t.name, t.ggml_type)?;
    }
    Ok(())
}
