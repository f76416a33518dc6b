//! Loading a safetensors file copies no tensor data: host allocations do not grow by the
//! file's size. Alone in its test binary so no other test allocates concurrently.

use rmlx_core::{active_memory, Array};
use rmlx_io::{load_safetensors, save_safetensors, Metadata};

#[test]
fn loading_maps_instead_of_copying() {
    let n = 4 << 20; // 16 MiB of f32
    let x = Array::from_slice(&vec![1.5f32; n], &[1024, n / 1024]).unwrap();
    let y = Array::from_slice(&vec![7u32; n / 4], &[n / 4]).unwrap();
    let p = std::env::temp_dir().join(format!("rmlx-io-mmap-{}.safetensors", std::process::id()));
    save_safetensors(&p, &[("x", &x), ("y", &y)], &Metadata::new()).unwrap();
    drop((x, y));
    let before = active_memory();
    let (ts, _) = load_safetensors(&p).unwrap();
    for (_, a) in &ts {
        a.eval().unwrap();
        assert!(a.data().unwrap().buffer.is_mapped());
    }
    let grew = active_memory().saturating_sub(before);
    assert!(grew < 1 << 20, "loading 20 MiB allocated {grew} bytes");
    assert_eq!(ts[0].1.shape(), &[1024, n / 1024]);
    std::fs::remove_file(&p).unwrap();
}
