//! Kernel sources → loaded functions. Sources are generated from the `.cu` files embedded in
//! the binary (one instantiation per op, dtype and layout class, like MLX's JIT kernels),
//! compiled by NVRTC for the card's architecture on first use and cached on disk as cubin, keyed
//! by a hash of source, architecture and NVRTC version: a second process compiles nothing.
//!
//! The cache lives in `$RMLX_KERNEL_CACHE`, else `$XDG_CACHE_HOME/rmlx/kernels`, else
//! `~/.cache/rmlx/kernels`; deleting the folder clears it.

use crate::context::cuda_err;
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys, Ptx};
use rmlx_core::{Error, Result};
use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Definitions every kernel source starts with: dtypes, conversions, strided indexing.
pub const PRELUDE: &str = include_str!("../kernels/prelude.cuh");

/// Tensor-core helpers (ldmatrix, mma.sync, cp.async) for the kernels that use them.
pub const MMA_CUH: &str = include_str!("../kernels/mma.cuh");

/// FNV-1a, 64 bits: a stable hash for cache file names (std's hasher may change between
/// Rust releases).
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The folder kernel binaries are cached in.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RMLX_KERNEL_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("rmlx").join("kernels")
}

/// Folders where NVRTC is often installed but not on the loader's path: the CUDA toolkit, and
/// the `nvidia-cuda-nvrtc` wheels that PyTorch pulls in.
fn nvrtc_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["RMLX_NVRTC_DIR", "CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = std::env::var_os(var) {
            let d = PathBuf::from(d);
            dirs.push(d.join("lib64"));
            dirs.push(d.join("lib"));
            dirs.push(d);
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/lib".into());
    for base in ["/usr/local/lib", "/usr/lib", "/opt/conda/lib"] {
        let Ok(rd) = std::fs::read_dir(base) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("python3") {
                continue;
            }
            for pk in ["site-packages", "dist-packages"] {
                for sub in ["cu13", "cuda_nvrtc", "cu12"] {
                    dirs.push(e.path().join(pk).join("nvidia").join(sub).join("lib"));
                }
            }
        }
    }
    dirs
}

/// Loads NVRTC from one of [`nvrtc_dirs`] into the global namespace, so that the by-name load
/// that follows finds it. Returns the file loaded.
fn preload_nvrtc() -> Option<PathBuf> {
    for d in nvrtc_dirs() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().starts_with("libnvrtc.so"))
                    .unwrap_or(false)
            })
            .collect();
        files.sort();
        for f in files {
            // SAFETY: loading NVRTC runs only its initialisers; the handle is kept for the
            // life of the process.
            let lib = unsafe {
                libloading::os::unix::Library::open(
                    Some(&f),
                    libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                )
            };
            if let Ok(lib) = lib {
                std::mem::forget(lib);
                return Some(f);
            }
        }
    }
    None
}

/// NVRTC's version as "major.minor", or an error saying NVRTC could not be loaded.
pub fn nvrtc_version() -> Result<String> {
    static V: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    V.get_or_init(|| {
        // SAFETY: probes whether the shared library loads.
        if !unsafe { nvrtc_sys::is_culib_present() } {
            let found = preload_nvrtc();
            // SAFETY: as above.
            if found.is_none() || !unsafe { nvrtc_sys::is_culib_present() } {
                return Err("NVRTC (libnvrtc.so), which compiles the GPU kernels, was not found on the loader path, in /usr/local/cuda or in a Python `nvidia` wheel: install the CUDA toolkit's NVRTC (or `pip install nvidia-cuda-nvrtc`) or set RMLX_NVRTC_DIR to its folder".into());
            }
        }
        let (mut a, mut b) = (0i32, 0i32);
        // SAFETY: writes two ints.
        unsafe { nvrtc_sys::nvrtcVersion(&mut a, &mut b) }
            .result()
            .map_err(|e| format!("nvrtcVersion: {e:?}"))?;
        Ok(format!("{a}.{b}"))
    })
    .clone()
    .map_err(|e| Error::runtime("nvrtc", e))
}

/// Compiles `src` to a cubin for `arch` (`sm_90`). A compile error carries NVRTC's log.
pub fn compile_cubin(src: &str, arch: &str, name: &str) -> Result<Vec<u8>> {
    nvrtc_version()?;
    let csrc = CString::new(src).map_err(|_| Error::runtime("nvrtc", "source contains a NUL"))?;
    let cname = CString::new(format!("{name}.cu")).unwrap_or_default();
    let prog = nvrtc::create_program(&csrc, Some(&cname))
        .map_err(|e| Error::runtime("nvrtc", format!("creating program {name}: {e:?}")))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    // SAFETY: prog is a live program; options are valid strings.
    let compiled = unsafe { nvrtc::compile_program(prog, &opts) };
    let out = (|| {
        if let Err(e) = compiled {
            // SAFETY: prog is live.
            let log = unsafe { nvrtc::get_program_log(prog) }
                .map(|l| {
                    let bytes: Vec<u8> =
                        l.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .unwrap_or_default();
            return Err(Error::runtime(
                "nvrtc",
                format!("kernel {name} failed to compile for {arch} ({e:?}):\n{log}"),
            ));
        }
        let mut size = 0usize;
        // SAFETY: prog compiled; size is written.
        unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size) }
            .result()
            .map_err(|e| Error::runtime("nvrtc", format!("cubin size of {name}: {e:?}")))?;
        let mut bin = vec![0u8; size];
        // SAFETY: bin holds size bytes.
        unsafe { nvrtc_sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr() as *mut _) }
            .result()
            .map_err(|e| Error::runtime("nvrtc", format!("cubin of {name}: {e:?}")))?;
        Ok(bin)
    })();
    // SAFETY: prog is live and destroyed once.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    out
}

/// `body` with `rmlx_pdl_entry();` (prelude.cuh) as the first statement of every
/// `extern "C" __global__` entry point, so that every kernel can be launched as a programmatic
/// dependent of the one before it (launch.rs). Entry points whose body starts with
/// `RMLX_PDL_MANUAL` wait on their own.
pub fn with_pdl_entry(body: &str) -> String {
    const ENTRY: &str = "extern \"C\" __global__";
    let mut out = String::with_capacity(body.len() + 256);
    let mut rest = body;
    while let Some(i) = rest.find(ENTRY) {
        // the body opens at the first brace after the parameter list (which has none)
        let Some(j) = rest[i..].find('{') else { break };
        out.push_str(&rest[..i + j + 1]);
        rest = &rest[i + j + 1..];
        if !rest.trim_start().starts_with("RMLX_PDL_MANUAL") {
            out.push_str(" rmlx_pdl_entry();");
        }
    }
    out.push_str(rest);
    out
}

/// Loaded kernels of one device, by name. A kernel's name encodes everything its generated
/// source depends on (op, dtypes, layout class, compile-time sizes), so the per-launch lookup
/// is one string hash; debug builds check that a name never maps to two sources.
pub struct KernelCache {
    arch: String,
    loaded: Mutex<HashMap<String, (u64, CudaFunction)>>,
}

impl KernelCache {
    pub fn new(arch: String) -> KernelCache {
        KernelCache {
            arch,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The function `name` from `body` (appended to the prelude), compiling or reading the disk
    /// cache the first time.
    pub fn get(&self, ctx: &Arc<CudaContext>, name: &str, body: &str) -> Result<CudaFunction> {
        if let Some((h, f)) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            debug_assert_eq!(
                *h,
                fnv64(&[body.as_bytes()]),
                "kernel name {name} was generated from two different sources"
            );
            let _ = h;
            return Ok(f.clone());
        }
        let src = format!("{PRELUDE}\n{}", with_pdl_entry(body));
        let ver = nvrtc_version()?;
        let file_key = fnv64(&[src.as_bytes(), self.arch.as_bytes(), ver.as_bytes()]);
        let dir = cache_dir();
        let path = dir.join(format!("{name}-{file_key:016x}.cubin"));
        let cubin = match std::fs::read(&path) {
            Ok(b) if !b.is_empty() => b,
            _ => {
                let b = compile_cubin(&src, &self.arch, name)?;
                crate::stats::COMPILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A cache we cannot write only costs the next process a compile.
                if std::fs::create_dir_all(&dir).is_ok() {
                    let tmp = dir.join(format!(".{name}-{file_key:016x}.{}", std::process::id()));
                    if std::fs::write(&tmp, &b).is_ok() {
                        let _ = std::fs::rename(&tmp, &path);
                    }
                }
                b
            }
        };
        let module = ctx
            .load_module(Ptx::from_binary(cubin))
            .map_err(|e| cuda_err(&format!("loading kernel {name}"), e))?;
        let f = module
            .load_function(name)
            .map_err(|e| cuda_err(&format!("finding kernel {name}"), e))?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (fnv64(&[body.as_bytes()]), f.clone()));
        Ok(f)
    }

    /// How many loaded kernels' names start with `prefix` (tests check which kernel ran).
    pub fn loaded_with_prefix(&self, prefix: &str) -> usize {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
    }
}

/// Test helper: `sources` (after the prelude) compile with NVRTC for sm_90. Needs only libnvrtc,
/// no GPU; skips, saying so, where NVRTC is missing.
#[cfg(test)]
pub(crate) fn assert_compiles(name: &str, sources: &str) {
    if nvrtc_version().is_err() {
        eprintln!("skipped: NVRTC not found");
        return;
    }
    if let Err(e) = compile_cubin(
        &format!("{PRELUDE}\n{}", with_pdl_entry(sources)),
        "sm_90",
        name,
    ) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod pdl_tests {
    use super::with_pdl_entry;

    #[test]
    fn every_entry_point_waits_first() {
        let src = "__device__ void f() {}\nextern \"C\" __global__ void a(const float* x, Lay l) {\n  f();\n}\nextern \"C\" __global__ void __launch_bounds__(128) b(int n) { g(); }\n";
        let out = with_pdl_entry(src);
        assert_eq!(out.matches("rmlx_pdl_entry();").count(), 2);
        assert!(out.contains("Lay l) { rmlx_pdl_entry();\n  f();"));
        assert!(out.contains("b(int n) { rmlx_pdl_entry(); g(); }"));
        assert!(out.starts_with("__device__ void f() {}"));
        let manual = "extern \"C\" __global__ void c(int n) {\n  RMLX_PDL_MANUAL h(n); }\nextern \"C\" __global__ void d() { g(); }";
        let out = with_pdl_entry(manual);
        assert_eq!(out.matches("rmlx_pdl_entry();").count(), 1);
        assert!(out.contains("c(int n) {\n  RMLX_PDL_MANUAL h(n); }"));
        assert!(out.contains("d() { rmlx_pdl_entry(); g(); }"));
    }
}
