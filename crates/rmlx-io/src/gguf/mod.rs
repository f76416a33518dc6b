//! GGUF (versions 2 and 3): header, metadata of every value type, the tensor table, and tensor
//! data mapped from the file. Quantized block types are imported losslessly into MLX's affine
//! format (see [`quants`]); float tensors are zero-copy views of the mapping.
//!
//! Layout: `GGUF` magic, u32 version, u64 tensor count, u64 metadata count, the metadata
//! key/values, the tensor infos (name, n_dims, dims innermost first, type, offset), padding to
//! `general.alignment` (default 32), then the data.

mod quants;
mod types;

pub use quants::Tensor;
pub use types::GgmlType;

use crate::file::{checked_nbytes, MmapFile};
use rmlx_core::shape::fmt_shape;
use rmlx_core::{Array, Dtype, Error, MappedBytes, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

const OP: &str = "gguf";
const MAX_DIMS: usize = 4;
const MAX_NESTING: usize = 8;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The GGUF name of the value's type (`u32`, `string`, `array`...), for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
        }
    }

    /// The value as an integer when it is one (any width or signedness).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float when it is a number (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    /// The string of a `string` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Its GGML type.
    pub ggml_type: GgmlType,
    /// Shape in rmlx order: GGUF's dims reversed, so the last axis is the contiguous one.
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Bytes of data (`None` for an unknown type).
    pub nbytes: Option<usize>,
}

/// An open GGUF file: parsed metadata and tensor table over a read-only mapping.
pub struct GgufFile {
    src: Arc<dyn MappedBytes>,
    what: String,
    version: u32,
    alignment: usize,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

/// A bounds-checked reader over the file bytes.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "file truncated at byte {} while reading {what} ({n} bytes needed)",
                self.pos
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N, what)?.try_into().expect("length checked"))
    }
    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    /// A count of items each at least `min_size` bytes: refused when the rest of the file could
    /// not hold them, so a corrupt count never drives a huge allocation.
    fn count(&mut self, min_size: usize, what: &str) -> std::result::Result<usize, String> {
        let n = self.u64(what)?;
        if n.saturating_mul(min_size as u64) > self.remaining() as u64 {
            return Err(format!(
                "{what} {n} is larger than the rest of the file could hold"
            ));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let n = self.count(1, &format!("length of {what}"))?;
        Ok(String::from_utf8_lossy(self.take(n, what)?).into_owned())
    }

    fn value(
        &mut self,
        ty: u32,
        key: &str,
        depth: usize,
    ) -> std::result::Result<GgufValue, String> {
        use GgufValue as V;
        Ok(match ty {
            0 => V::U8(self.arr::<1>(key)?[0]),
            1 => V::I8(self.arr::<1>(key)?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.arr(key)?)),
            3 => V::I16(i16::from_le_bytes(self.arr(key)?)),
            4 => V::U32(self.u32(key)?),
            5 => V::I32(i32::from_le_bytes(self.arr(key)?)),
            6 => V::F32(f32::from_le_bytes(self.arr(key)?)),
            7 => match self.arr::<1>(key)?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => {
                    return Err(format!(
                        "metadata '{key}': bool byte {b} is neither 0 nor 1"
                    ))
                }
            },
            8 => V::String(self.string(key)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(format!(
                        "metadata '{key}': arrays nested deeper than {MAX_NESTING}"
                    ));
                }
                let elem = self.u32(key)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(format!("metadata '{key}': unknown array element type {t}")),
                };
                let n = self.count(min, &format!("metadata '{key}' array length"))?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(elem, key, depth + 1)?);
                }
                V::Array(v)
            }
            10 => V::U64(self.u64(key)?),
            11 => V::I64(i64::from_le_bytes(self.arr(key)?)),
            12 => V::F64(f64::from_le_bytes(self.arr(key)?)),
            t => return Err(format!("metadata '{key}': unknown value type {t}")),
        })
    }
}

/// Dense tensors up to this size are copied out of the mapping (see `GgufFile::load`); larger
/// ones (a float embedding or weight) stay zero-copy views of it.
const SMALL_DENSE_BYTES: usize = 1 << 20;

impl GgufFile {
    /// Maps and parses `path`. Data is not read until a tensor is loaded.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let map = MmapFile::open(OP, path)?;
        GgufFile::from_bytes(map, &path.display().to_string())
    }

    /// Parses GGUF bytes held by `src` (`what` names the source in errors).
    pub fn from_bytes(src: Arc<dyn MappedBytes>, what: &str) -> Result<GgufFile> {
        let parsed = parse(src.bytes());
        let (version, alignment, metadata, tensors) =
            parsed.map_err(|m| Error::io(OP, format!("{what}: {m}")))?;
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            src,
            what: what.to_string(),
            version,
            alignment,
            metadata,
            tensors,
            index,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }
    /// Every metadata key/value.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }
    /// The tensor table in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    /// The table entry of `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }
    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn need(&self, key: &str) -> Result<&GgufValue> {
        self.get(key)
            .ok_or_else(|| Error::invalid(OP, format!("{}: no metadata key '{key}'", self.what)))
    }
    fn wrong(&self, key: &str, want: &str, v: &GgufValue) -> Error {
        Error::invalid(
            OP,
            format!(
                "{}: metadata '{key}' is {} ({v:?}), expected {want}",
                self.what,
                v.type_name()
            ),
        )
    }
    fn int<T: TryFrom<i128>>(&self, key: &str, want: &str) -> Result<T> {
        let v = self.need(key)?;
        v.as_i128()
            .and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| self.wrong(key, want, v))
    }

    /// An integer value of any stored width that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.int(key, "an integer fitting u32")
    }
    /// An integer value that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.int(key, "an integer fitting u64")
    }
    /// An integer value that fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.int(key, "an integer fitting i64")
    }
    /// A number (float or integer) as `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.need(key)?;
        v.as_f64()
            .map(|f| f as f32)
            .ok_or_else(|| self.wrong(key, "a number", v))
    }
    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.need(key)? {
            GgufValue::Bool(b) => Ok(*b),
            v => Err(self.wrong(key, "a bool", v)),
        }
    }
    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.need(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, "a string", v))
    }
    fn array(&self, key: &str) -> Result<&[GgufValue]> {
        match self.need(key)? {
            GgufValue::Array(a) => Ok(a),
            v => Err(self.wrong(key, "an array", v)),
        }
    }
    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong(key, "an array of strings", v))
            })
            .collect()
    }
    /// An array of numbers as `f32`.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let a = self.array(key)?;
        a.iter()
            .map(|v| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| self.wrong(key, "an array of numbers", v))
            })
            .collect()
    }
    /// An array of integers that fit in `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let a = self.array(key)?;
        let conv = |v: &GgufValue| v.as_i128().and_then(|i| i32::try_from(i).ok());
        a.iter()
            .map(|v| conv(v).ok_or_else(|| self.wrong(key, "an array of i32 integers", v)))
            .collect()
    }
    /// An array of integers that fit in `u32`.
    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>> {
        let a = self.array(key)?;
        let conv = |v: &GgufValue| v.as_i128().and_then(|i| u32::try_from(i).ok());
        a.iter()
            .map(|v| conv(v).ok_or_else(|| self.wrong(key, "an array of u32 integers", v)))
            .collect()
    }

    /// The raw bytes of tensor `name` in the mapping.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.info_or_err(name)?;
        let n = t.nbytes.ok_or_else(|| self.unsupported(t))?;
        Ok(&self.src.bytes()[t.offset..t.offset + n])
    }

    fn info_or_err(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_info(name)
            .ok_or_else(|| Error::invalid(OP, format!("{}: no tensor named '{name}'", self.what)))
    }

    fn unsupported(&self, t: &TensorInfo) -> Error {
        Error::dtype(
            OP,
            format!(
                "{}: tensor '{}' has type {}, which rmlx cannot import (supported: F32, F16, BF16, I32, I64, \
                 Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
                self.what, t.name, t.ggml_type
            ),
        )
    }

    /// Loads tensor `name`: float and integer tensors as zero-copy arrays of the mapping (up to
    /// 1 MiB: copies), quantized block types as MLX affine triples (see [`Tensor`]).
    pub fn load(&self, name: &str) -> Result<Tensor> {
        let t = self.info_or_err(name)?;
        let dense = match t.ggml_type {
            GgmlType::F32 => Dtype::F32,
            GgmlType::F16 => Dtype::F16,
            GgmlType::BF16 => Dtype::BF16,
            GgmlType::I32 => Dtype::I32,
            GgmlType::I64 => Dtype::I64,
            ty if ty.affine_bits().is_some() => {
                let bytes = self.tensor_bytes(name)?;
                let out = quants::import(&t.name, ty, bytes, &t.shape)
                    .map_err(|m| Error::io(OP, format!("{}: tensor '{}': {m}", self.what, t.name)));
                // The import copied the blocks: their pages of the mapping can leave memory
                // (otherwise a quantized model is resident twice while it loads).
                self.src.release(t.offset, bytes.len());
                return out;
            }
            _ => return Err(self.unsupported(t)),
        };
        let bytes = self.tensor_bytes(name)?;
        if bytes.len() <= SMALL_DENSE_BYTES {
            // Copied, and its pages released like a quantized tensor's: a norm weight read
            // from the mapping at run time would fault in the whole page-cache folio around it
            // (megabytes of other tensors on large-folio file systems), keeping most of the
            // file resident for a few KiB.
            let a = Array::from_bytes(bytes, &t.shape, dense)?;
            self.src.release(t.offset, bytes.len());
            return Ok(Tensor::Dense(a));
        }
        Ok(Tensor::Dense(Array::from_mapped(
            self.src.clone(),
            t.offset,
            &t.shape,
            dense,
        )?))
    }
}

type Parsed = (u32, usize, BTreeMap<String, GgufValue>, Vec<TensorInfo>);

fn parse(b: &[u8]) -> std::result::Result<Parsed, String> {
    let mut c = Cursor { b, pos: 0 };
    let magic = c
        .take(4, "the magic")
        .map_err(|_| format!("{} bytes is too short for a GGUF file", b.len()))?;
    if magic != b"GGUF" {
        return Err(format!("bad magic {magic:02x?}: not a GGUF file"));
    }
    let version = c.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(
                "GGUF version 1 (32-bit counts) is not supported; re-convert the model".into(),
            )
        }
        v if v.swap_bytes() <= 3 => return Err("big-endian GGUF files are not supported".into()),
        v => {
            return Err(format!(
                "unsupported GGUF version {v} (rmlx reads versions 2 and 3)"
            ))
        }
    }
    // Minimal sizes: a tensor info is name length + n_dims + type + offset; a key/value pair is
    // key length + value type + one byte.
    let n_tensors = c.count(24, "tensor count")?;
    let n_kv = c.count(13, "metadata count")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("a metadata key")?;
        let ty = c.u32(&key)?;
        let v = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), v).is_some() {
            return Err(format!("metadata key '{key}' appears twice"));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => *a as usize,
        Some(v) => {
            return Err(format!(
                "general.alignment must be a power-of-two u32, got {v:?}"
            ))
        }
    };
    let mut raw = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("a tensor name")?;
        let nd = c.u32(&name)? as usize;
        if nd == 0 || nd > MAX_DIMS {
            return Err(format!(
                "tensor '{name}': {nd} dimensions (GGUF allows 1 to {MAX_DIMS})"
            ));
        }
        let mut dims = Vec::with_capacity(nd);
        for _ in 0..nd {
            let d = c.u64(&name)?;
            dims.push(
                usize::try_from(d)
                    .map_err(|_| format!("tensor '{name}': dimension {d} is too large"))?,
            );
        }
        let ty = GgmlType::from_id(c.u32(&name)?);
        let offset = c.u64(&name)?;
        raw.push((name, dims, ty, offset));
    }
    let data_start = c.pos.next_multiple_of(alignment);
    let mut tensors = Vec::with_capacity(raw.len());
    let mut seen = HashMap::new();
    for (name, dims, ty, rel) in raw {
        let shape: Vec<usize> = dims.iter().rev().copied().collect();
        // Element count, refused when even the zero-free product overflows (strides would).
        let numel = checked_nbytes(&shape, 1)
            .ok_or_else(|| format!("tensor '{name}': shape {} is too large", fmt_shape(&shape)))?;
        let nbytes = match ty.block() {
            None => None,
            Some((bs, ts)) => {
                if dims[0] % bs != 0 {
                    return Err(format!(
                        "tensor '{name}': {ty} stores blocks of {bs} but its rows have {} elements (shape {})",
                        dims[0],
                        fmt_shape(&shape)
                    ));
                }
                let n = (numel / bs).checked_mul(ts);
                Some(n.ok_or_else(|| {
                    format!("tensor '{name}': shape {} is too large", fmt_shape(&shape))
                })?)
            }
        };
        let offset = usize::try_from(rel)
            .ok()
            .and_then(|r| r.checked_add(data_start));
        let end = offset.and_then(|o| o.checked_add(nbytes.unwrap_or(0)));
        match (offset, end) {
            (Some(o), Some(e)) if e <= b.len() => {
                if seen.insert(name.clone(), ()).is_some() {
                    return Err(format!("tensor '{name}' appears twice"));
                }
                tensors.push(TensorInfo { name, ggml_type: ty, shape, offset: o, nbytes });
            }
            _ => {
                return Err(format!(
                    "tensor '{name}' ({ty}, shape {}, {} bytes at data offset {rel}) lies past the end of the {}-byte file",
                    fmt_shape(&shape),
                    nbytes.map_or("?".into(), |n| n.to_string()),
                    b.len()
                ))
            }
        }
    }
    // A tensor whose type x shape size runs into the next tensor's bytes is corrupt.
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for w in by_offset.windows(2) {
        if w[0].offset + w[0].nbytes.unwrap_or(0) > w[1].offset {
            return Err(format!(
                "tensor '{}' ({}, shape {}, {} bytes) overlaps tensor '{}'",
                w[0].name,
                w[0].ggml_type,
                fmt_shape(&w[0].shape),
                w[0].nbytes.unwrap_or(0),
                w[1].name
            ));
        }
    }
    Ok((version, alignment, metadata, tensors))
}
