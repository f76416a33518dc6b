//! safetensors: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then the
//! tensor bytes. Loading maps the file and makes every tensor a zero-copy view of the mapping.

use crate::file::{checked_nbytes, put, write_array, write_atomic, MmapFile};
use rmlx_core::shape::fmt_shape;
use rmlx_core::{Array, Dtype, Error, MappedBytes, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The free-form `__metadata__` string map of a safetensors file.
pub type Metadata = BTreeMap<String, String>;

const OP: &str = "load_safetensors";

/// The safetensors name of a dtype.
pub fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "BOOL",
        Dtype::U8 => "U8",
        Dtype::U32 => "U32",
        Dtype::I32 => "I32",
        Dtype::I64 => "I64",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::F32 => "F32",
    }
}

fn parse_dtype(s: &str) -> Option<Dtype> {
    Dtype::ALL.into_iter().find(|&d| dtype_name(d) == s)
}

/// Loads every tensor of a safetensors file, in file order, as zero-copy views of a read-only
/// mapping (no tensor data is copied unless a tensor is misaligned for its dtype), plus the
/// `__metadata__` map (empty when absent or `null`, as `mx.save_safetensors` writes it).
/// MLX pads neither its header nor its tensors, so in MLX-written files tensors of 4- and
/// 8-byte dtypes are often misaligned and then copied.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<(Vec<(String, Array)>, Metadata)> {
    let path = path.as_ref();
    let map = MmapFile::open(OP, path)?;
    parse_safetensors(map, &path.display().to_string())
}

/// Parses safetensors bytes held by `src` (`what` names the source in errors). Every header
/// field is validated before an array is made: lengths, offsets, dtypes, sizes, overlaps.
pub fn parse_safetensors(
    src: Arc<dyn MappedBytes>,
    what: &str,
) -> Result<(Vec<(String, Array)>, Metadata)> {
    let bytes = src.bytes();
    let err = |msg: String| Error::io(OP, format!("{what}: {msg}"));
    if bytes.len() < 8 {
        return Err(err(format!(
            "{} bytes is too short for a safetensors header",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let avail = (bytes.len() - 8) as u64;
    if n > avail {
        return Err(err(format!(
            "header length {n} runs past the end of the {}-byte file",
            bytes.len()
        )));
    }
    let header_end = 8 + n as usize;
    let header: Value = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|e| err(format!("header is not valid JSON: {e}")))?;
    let Value::Object(entries) = header else {
        return Err(err("header is not a JSON object".into()));
    };
    let data_len = (bytes.len() - header_end) as u64;
    let mut metadata = Metadata::new();
    // (begin, end, name, dtype, shape)
    let mut infos: Vec<(u64, u64, String, Dtype, Vec<usize>)> = Vec::with_capacity(entries.len());
    for (name, v) in entries {
        if name == "__metadata__" {
            // mx.save_safetensors writes `null` when there is no metadata.
            let m = match v {
                Value::Object(m) => m,
                Value::Null => continue,
                _ => return Err(err("__metadata__ is not an object".into())),
            };
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(err(format!("__metadata__ value of '{k}' is not a string")));
                };
                metadata.insert(k, s);
            }
            continue;
        }
        let (dtype, shape, begin, end) =
            tensor_info(&name, &v).map_err(|m| err(format!("tensor '{name}': {m}")))?;
        let nbytes = checked_nbytes(&shape, dtype.size())
            .map(|n| n as u64)
            .ok_or_else(|| {
                err(format!(
                    "tensor '{name}': shape {} is too large",
                    fmt_shape(&shape)
                ))
            })?;
        if begin > end || end > data_len {
            return Err(err(format!(
                "tensor '{name}': data_offsets [{begin}, {end}] lie outside the {data_len} data bytes"
            )));
        }
        if end - begin != nbytes {
            return Err(err(format!(
                "tensor '{name}': {dtype} of shape {} needs {nbytes} bytes but data_offsets span {}",
                fmt_shape(&shape),
                end - begin
            )));
        }
        infos.push((begin, end, name, dtype, shape));
    }
    infos.sort_by_key(|t| (t.0, t.1));
    // Empty tensors hold no bytes, so they overlap nothing wherever their offsets point.
    let filled: Vec<_> = infos.iter().filter(|t| t.0 < t.1).collect();
    for w in filled.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(err(format!(
                "tensors '{}' and '{}' overlap",
                w[0].2, w[1].2
            )));
        }
    }
    let mut out = Vec::with_capacity(infos.len());
    for (begin, _, name, dtype, shape) in infos {
        let a = Array::from_mapped(src.clone(), header_end + begin as usize, &shape, dtype)?;
        out.push((name, a));
    }
    Ok((out, metadata))
}

/// (dtype, shape, begin, end) of one header entry, or what is wrong with it.
fn tensor_info(
    name: &str,
    v: &Value,
) -> std::result::Result<(Dtype, Vec<usize>, u64, u64), String> {
    let Value::Object(o) = v else {
        return Err("entry is not an object".into());
    };
    let dt = o
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("missing string 'dtype'")?;
    let dtype = parse_dtype(dt).ok_or_else(|| {
        format!("dtype {dt} is not supported (rmlx has BOOL, U8, U32, I32, I64, F16, BF16, F32); convert '{name}' first")
    })?;
    let shape = o
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing array 'shape'")?
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or("shape entries must be non-negative integers")
        })
        .collect::<std::result::Result<Vec<usize>, _>>()?;
    let offs = o
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or("missing array 'data_offsets'")?;
    let [b, e] = offs.as_slice() else {
        return Err("data_offsets must have two entries".into());
    };
    let (b, e) = (b.as_u64(), e.as_u64());
    let (Some(b), Some(e)) = (b, e) else {
        return Err("data_offsets must be non-negative integers".into());
    };
    Ok((dtype, shape, b, e))
}

/// Writes `tensors` (evaluated here) to a safetensors file with `metadata`, through a temporary
/// file renamed into place. Tensors are laid out by decreasing element size, then name, so every
/// tensor is aligned for its dtype when mapped.
pub fn save_safetensors<S: AsRef<str>>(
    path: impl AsRef<Path>,
    tensors: &[(S, &Array)],
    metadata: &Metadata,
) -> Result<()> {
    const OP: &str = "save_safetensors";
    let path = path.as_ref();
    let mut order: Vec<(&str, &Array)> = tensors.iter().map(|(n, a)| (n.as_ref(), *a)).collect();
    order.sort_by(|a, b| {
        b.1.dtype()
            .size()
            .cmp(&a.1.dtype().size())
            .then(a.0.cmp(b.0))
    });
    let mut header = Map::new();
    if !metadata.is_empty() {
        let m = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut offset = 0u64;
    for (name, a) in &order {
        if *name == "__metadata__" || header.contains_key(*name) {
            return Err(Error::invalid(
                OP,
                format!(
                    "{}: duplicate or reserved tensor name '{name}'",
                    path.display()
                ),
            ));
        }
        let end = offset + a.nbytes() as u64;
        let entry = serde_json::json!({
            "dtype": dtype_name(a.dtype()),
            "shape": a.shape(),
            "data_offsets": [offset, end],
        });
        header.insert(name.to_string(), entry);
        offset = end;
    }
    let mut json =
        serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::io(OP, e.to_string()))?;
    // Pad with spaces so the data starts 8-byte aligned (as the reference writer does).
    json.resize(json.len().next_multiple_of(8), b' ');
    write_atomic(OP, path, |w| {
        put(OP, path, w, &(json.len() as u64).to_le_bytes())?;
        put(OP, path, w, &json)?;
        for (_, a) in &order {
            write_array(OP, path, a, w)?;
        }
        Ok(())
    })
}
