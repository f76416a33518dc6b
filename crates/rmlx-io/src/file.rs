//! Shared plumbing: memory-mapped input files, atomic output files, and the contiguous
//! little-endian bytes of an array.

use rmlx_core::{Array, Error, MappedBytes, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A read-only memory mapping of a whole file; arrays loaded from it keep it alive.
pub struct MmapFile {
    // `None` for an empty file: mapping zero bytes is an error on some systems.
    map: Option<memmap2::Mmap>,
}

impl MappedBytes for MmapFile {
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    fn release(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Some(m) = &self.map {
            if offset.checked_add(len).is_some_and(|e| e <= m.len()) && len > 0 {
                // SAFETY: the mapping is read-only and file-backed, so dropping its pages loses
                // nothing: a later read faults them in from the file again. (The range is
                // widened to whole pages, which may cover a neighbour's bytes: same reasoning.)
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
                };
            }
        }
    }
}

impl MmapFile {
    /// Maps `path` read-only; errors name `op` and the path.
    pub fn open(op: &'static str, path: &Path) -> Result<Arc<MmapFile>> {
        let file = File::open(path)
            .map_err(|e| Error::io(op, format!("cannot open {}: {e}", path.display())))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(op, format!("cannot stat {}: {e}", path.display())))?
            .len();
        if len == 0 {
            return Ok(Arc::new(MmapFile { map: None }));
        }
        // SAFETY: the mapping is read-only. As with every mmap-based loader, a file truncated or
        // rewritten by another process while mapped is outside what we can guard against.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::io(op, format!("cannot map {}: {e}", path.display())))?;
        Ok(Arc::new(MmapFile { map: Some(map) }))
    }
}

/// Writes a file through a temporary sibling renamed into place on success, so a failed write
/// (full disk, interrupted process) never leaves a half-written file under the final name.
pub(crate) fn write_atomic(
    op: &'static str,
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(op, format!("{} is not a file path", path.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let result = (|| {
        let file = File::create(&tmp)
            .map_err(|e| Error::io(op, format!("cannot create {}: {e}", path.display())))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        body(&mut w)?;
        let file = w.into_inner().map_err(|e| {
            Error::io(
                op,
                format!("cannot write {}: {}", path.display(), e.error()),
            )
        })?;
        file.sync_all()
            .map_err(|e| Error::io(op, format!("cannot write {}: {e}", path.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(op, format!("cannot write {}: {e}", path.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `write_all` with the error naming `op` and `path`.
pub(crate) fn put(op: &'static str, path: &Path, w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    w.write_all(bytes)
        .map_err(|e| Error::io(op, format!("cannot write {}: {e}", path.display())))
}

/// Evaluates `a` and writes its elements in row-major order as little-endian bytes (`bool` as
/// one byte 0/1). Strided views are gathered here, so no backend copy kernel is needed.
pub(crate) fn write_array(
    op: &'static str,
    path: &Path,
    a: &Array,
    w: &mut impl Write,
) -> Result<()> {
    let d = a.data()?;
    let size = d.dtype.size();
    let bytes = d.buffer.as_slice();
    let n = d.numel();
    if n == 0 {
        return Ok(());
    }
    if d.is_contiguous() {
        let start = d.offset * size;
        return put(op, path, w, &bytes[start..start + n * size]);
    }
    // Odometer over all but the last axis; the last axis is gathered element by element.
    let nd = d.shape.len();
    let (inner, inner_stride) = (d.shape[nd - 1], d.strides[nd - 1]);
    let mut idx = vec![0usize; nd.saturating_sub(1)];
    let mut row = Vec::with_capacity(inner * size);
    for _ in 0..n / inner {
        let mut base = d.offset as isize;
        for (ax, &i) in idx.iter().enumerate() {
            base += i as isize * d.strides[ax];
        }
        row.clear();
        for j in 0..inner {
            let e = (base + j as isize * inner_stride) as usize * size;
            row.extend_from_slice(&bytes[e..e + size]);
        }
        put(op, path, w, &row)?;
        for ax in (0..idx.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < d.shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Ok(())
}

/// The elements of `a` (evaluated here) as contiguous little-endian bytes.
pub(crate) fn host_bytes(a: &Array) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(a.nbytes());
    write_array("host_bytes", Path::new("<memory>"), a, &mut v)?;
    Ok(v)
}

/// The elements of a float or u32 array as f32, converted on the host (no backend needed).
pub(crate) fn host_f32(a: &Array) -> Result<Vec<f32>> {
    let b = host_bytes(a)?;
    let conv: fn(&[u8]) -> f32 = match a.dtype() {
        rmlx_core::Dtype::F32 => |c| f32::from_le_bytes(c.try_into().expect("4 bytes")),
        rmlx_core::Dtype::F16 => |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
        rmlx_core::Dtype::BF16 => |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        rmlx_core::Dtype::U32 => |c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as f32,
        d => {
            return Err(Error::dtype(
                "host_f32",
                format!("expected a float array, got {d}"),
            ))
        }
    };
    Ok(b.chunks_exact(a.dtype().size()).map(conv).collect())
}

/// Bytes of a row-major array of `shape` with `elem_size`-byte elements, or `None` when the
/// shape is too large to describe: the product of its dimensions, with zeros counted as one (as
/// row-major strides do), times `elem_size` must fit in `isize`. This bounds every stride and
/// partial product too, so a shape with a zero dimension cannot smuggle in an overflow.
pub(crate) fn checked_nbytes(shape: &[usize], elem_size: usize) -> Option<usize> {
    let span = shape
        .iter()
        .try_fold(elem_size, |acc, &d| acc.checked_mul(d.max(1)))?;
    if span > isize::MAX as usize {
        return None;
    }
    Some(if shape.contains(&0) { 0 } else { span })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_pages_read_back_the_same_bytes() {
        let path = std::env::temp_dir().join(format!("rmlx-release-{}.bin", std::process::id()));
        let data: Vec<u8> = (0..3 * 4096 + 123).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let m = MmapFile::open("test", &path).unwrap();
        assert_eq!(m.bytes(), &data[..]);
        // unaligned, whole-file, empty and out-of-range requests
        m.release(100, 5000);
        m.release(0, data.len());
        m.release(7, 0);
        m.release(data.len() - 1, 2);
        assert_eq!(m.bytes(), &data[..]);
        std::fs::remove_file(&path).unwrap();
    }
}
