#!/usr/bin/env python3
"""Dev check (not CI): every tensor rmlx imports from a GGUF file equals gguf-py's dequantization.

~/anchors/venv/bin/python crates/rmlx-io/examples/gguf_check.py model.gguf
Builds and runs the gguf_dump example into a temporary directory, then compares each tensor with
`gguf.quants.dequantize` (np.array_equal: exact, +0 == -0). Prints one summary line per type.
"""
import collections, os, subprocess, sys, tempfile
import numpy as np
import gguf

path = sys.argv[1]
with tempfile.TemporaryDirectory() as out:
    subprocess.run(["cargo", "run", "--release", "-q", "-p", "rmlx-io", "--example", "gguf_dump", "--", path, out], check=True)
    info = {l.split("\t")[0]: l.rstrip("\n").split("\t")[1:] for l in open(os.path.join(out, "index.txt"))}
    stats = collections.defaultdict(lambda: [0, 0, 0, set()])  # tensors, elements, mismatched tensors, layouts
    for t in gguf.GGUFReader(path).tensors:
        ty = t.tensor_type.name
        s = stats[ty]
        s[0] += 1
        if info[t.name][1] == "REFUSED":
            s[3].add("refused")
            continue
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed([int(d) for d in t.shape])))
        got = np.load(os.path.join(out, t.name + ".npy"))
        s[1] += want.size
        if got.shape != want.shape or not np.array_equal(got, want):
            s[2] += 1
            print("MISMATCH", t.name, ty, got.shape, want.shape)
        s[3].add("/".join(info[t.name][1:]))
    for ty, (n, el, bad, lay) in sorted(stats.items()):
        print(f"{ty:6} tensors={n:4} elements={el:>11} mismatched_tensors={bad} layout={sorted(lay)}")
