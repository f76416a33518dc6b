"""Packs SmolLM2-135M-Instruct.Q4_1.gguf (98 MB) into what a device call can carry (64 MiB in
all, binaries included): its header (metadata, tokenizer), layer 0's tensors, the other
non-layer tensors and the token embedding's first 1,024 rows. assemble_gguf.py rebuilds a file
of the same size, layout and tensor types from them, every layer holding layer 0's weights and
the embedding its first rows repeated: real, valid values, so loading and the first token cost
what the real file's do (what a cold start measures), not the real text.

    python3 scripts/gpu/cold_start/split_gguf.py ~/.cache/rmlx/models/SmolLM2-135M-Instruct.Q4_1.gguf .devbin3/smol
"""
import json
import os
import struct
import sys

EMBED_ROWS = 1024  # token embedding rows kept (tiled by assemble_gguf.py)


def main(src, out):
    buf = open(src, "rb").read()
    pos = 0

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return v

    def rstr():
        nonlocal pos
        n = rd("Q")
        s = buf[pos:pos + n]
        pos += n
        return s.decode("utf-8", "replace")

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def rval(t):
        if t in scalar:
            return rd(scalar[t])
        if t == 8:
            return rstr()
        if t == 9:
            it, n = rd("I"), rd("Q")
            return [rval(it) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {t}")

    if buf[:4] != b"GGUF":
        sys.exit(f"{src} is not a GGUF file")
    pos = 4
    rd("I")
    n_tensors, n_kv = rd("Q"), rd("Q")
    align = 32
    for _ in range(n_kv):
        key, t = rstr(), rd("I")
        v = rval(t)
        if key == "general.alignment":
            align = v
    tensors = []
    for _ in range(n_tensors):
        name = rstr()
        dims = [rd("Q") for _ in range(rd("I"))]
        ty, off = rd("I"), rd("Q")
        tensors.append((name, dims, ty, off))
    start = (pos + align - 1) // align * align
    tensors.sort(key=lambda t: t[3])
    size = {t[0]: (tensors[i + 1][3] if i + 1 < len(tensors) else len(buf) - start) - t[3]
            for i, t in enumerate(tensors)}
    keep, where, recipe = bytearray(), {}, []
    for name, dims, ty, off in tensors:
        if name.startswith("blk.") and not name.startswith("blk.0."):
            continue
        n = size[name]
        if name == "token_embd.weight":
            n = size[name] // dims[1] * EMBED_ROWS  # whole rows: a row's bytes are size / rows
        where[name] = len(keep)
        keep += buf[start + off:start + off + n]
    for name, dims, ty, off in tensors:
        twin = "blk.0." + name.split(".", 2)[2] if name.startswith("blk.") else name
        if size[twin] != size[name]:
            sys.exit(f"{name} and {twin} differ in size: not a file this packing serves")
        tile = size[name] // dims[1] * EMBED_ROWS if name == "token_embd.weight" else 0
        recipe.append({"name": name, "offset": off, "size": size[name], "from": where[twin], "tile": tile})
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, "header.bin"), "wb").write(buf[:start])
    open(os.path.join(out, "keep.bin"), "wb").write(keep)
    json.dump({"start": start, "total": len(buf), "tensors": recipe}, open(os.path.join(out, "recipe.json"), "w"))
    print(f"{out}: header {start} B, tensors kept {len(keep)} B, for a file of {len(buf)} B")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
