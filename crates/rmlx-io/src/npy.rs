//! NumPy `.npy`: `\x93NUMPY`, a version, a header length (u16 for 1.0, u32 for 2.0/3.0), a
//! Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`, the data.

use crate::file::{checked_nbytes, put, write_array, write_atomic};
use rmlx_core::shape::fmt_shape;
use rmlx_core::{ops, Array, Dtype, Error, MappedBytes, Result};
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(d: Dtype) -> Option<&'static str> {
    Some(match d {
        Dtype::Bool => "|b1",
        Dtype::U8 => "|u1",
        Dtype::U32 => "<u4",
        Dtype::I32 => "<i4",
        Dtype::I64 => "<i8",
        Dtype::F16 => "<f2",
        Dtype::F32 => "<f4",
        Dtype::BF16 => return None,
    })
}

fn parse_descr(s: &str) -> std::result::Result<Dtype, String> {
    // '=' is native order; rmlx only runs little-endian, where '=' means '<'.
    let norm = s.replacen('=', "<", 1);
    for d in Dtype::ALL {
        if let Some(want) = descr(d) {
            if norm == want || norm == want.replace('|', "<") || norm == want.replace('|', ">") {
                return Ok(d);
            }
        }
    }
    if s.starts_with('>') {
        return Err(format!(
            "big-endian dtype '{s}' is not supported; save with a little-endian dtype"
        ));
    }
    if s.contains('O') {
        return Err(format!(
            "object dtype '{s}' cannot be loaded (it holds Python objects)"
        ));
    }
    Err(format!("dtype '{s}' is not supported (rmlx has bool, uint8, uint32, int32, int64, float16, float32)"))
}

/// The value text after `'key':` in the header dict, up to the matching end.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// (dtype, shape, fortran_order, data offset) of an npy file.
fn parse_header(b: &[u8]) -> std::result::Result<(Dtype, Vec<usize>, bool, usize), String> {
    if b.len() < 10 || &b[..6] != MAGIC {
        return Err("not an .npy file (bad magic)".into());
    }
    let (len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10usize),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}.{}", b[7])),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= b.len())
        .ok_or("header runs past the end of the file")?;
    let header = std::str::from_utf8(&b[start..end]).map_err(|_| "header is not text")?;
    let bad = |what: &str| format!("header has no valid '{what}': {}", header.trim());
    let d = field(header, "descr").ok_or_else(|| bad("descr"))?;
    let d = d.trim_matches(|c| c == '\'' || c == '"');
    let dtype = parse_descr(d)?;
    let fortran = match field(header, "fortran_order").ok_or_else(|| bad("fortran_order"))? {
        "True" => true,
        "False" => false,
        _ => return Err(bad("fortran_order")),
    };
    let shape_txt = field(header, "shape").ok_or_else(|| bad("shape"))?;
    let inner = shape_txt
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad("shape"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| bad("shape"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((dtype, shape, fortran, end))
}

/// Loads an `.npy` file (versions 1.0, 2.0, 3.0; little-endian; C or Fortran order, the latter
/// returned as a transposed view). Big-endian, object and unsupported dtypes are refused.
pub fn load_npy(path: impl AsRef<Path>) -> Result<Array> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io("load_npy", format!("cannot read {}: {e}", path.display())))?;
    parse_npy(Arc::new(bytes), &path.display().to_string())
}

/// Parses `.npy` bytes held by `src` (`what` names the source in errors); the array is a view
/// of `src`, not a copy.
pub fn parse_npy(src: Arc<dyn MappedBytes>, what: &str) -> Result<Array> {
    let b = src.bytes();
    let (dtype, shape, fortran, start) =
        parse_header(b).map_err(|m| Error::io("load_npy", format!("{what}: {m}")))?;
    let need = checked_nbytes(&shape, dtype.size());
    if need.is_none_or(|n| n != b.len() - start) {
        return Err(Error::io(
            "load_npy",
            format!(
                "{what}: {dtype} of shape {} needs {} bytes, the file has {}",
                fmt_shape(&shape),
                need.map_or("more than isize::MAX".into(), |n| n.to_string()),
                b.len() - start
            ),
        ));
    }
    if !fortran {
        return Array::from_mapped(src, start, &shape, dtype);
    }
    // Column-major data is the row-major array of the reversed shape, transposed back.
    let rev: Vec<usize> = shape.iter().rev().copied().collect();
    ops::transpose(&Array::from_mapped(src, start, &rev, dtype)?, None)
}

/// Saves `a` (evaluated here) as an `.npy` file (version 1.0, or 2.0 when the header needs it),
/// C order, little-endian. bfloat16 has no NumPy dtype and is refused.
pub fn save_npy(path: impl AsRef<Path>, a: &Array) -> Result<()> {
    const OP: &str = "save_npy";
    let path = path.as_ref();
    let d = descr(a.dtype()).ok_or_else(|| {
        Error::dtype(
            OP,
            format!(
                "{}: NumPy has no bfloat16; convert with astype(float32) first",
                path.display()
            ),
        )
    })?;
    let shape = match a.shape() {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
    // Pad with spaces and a newline so the data starts 64-byte aligned, as NumPy does.
    let padded = |prefix: usize, n: usize| (prefix + n + 1).next_multiple_of(64) - prefix - 1;
    let (version, prefix) = if padded(10, header.len()) < 65535 {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    header.resize(padded(prefix, header.len()), b' ');
    header.push(b'\n');
    write_atomic(OP, path, |w| {
        put(OP, path, w, MAGIC)?;
        put(OP, path, w, &[version, 0])?;
        if version == 1 {
            put(OP, path, w, &(header.len() as u16).to_le_bytes())?;
        } else {
            put(OP, path, w, &(header.len() as u32).to_le_bytes())?;
        }
        put(OP, path, w, &header)?;
        write_array(OP, path, a, w)
    })
}
