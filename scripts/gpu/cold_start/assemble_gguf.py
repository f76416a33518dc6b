"""Rebuilds the GGUF that split_gguf.py packed: python3 assemble_gguf.py PARTS_DIR OUT.gguf"""
import json
import sys

parts, out = sys.argv[1], sys.argv[2]
recipe = json.load(open(f"{parts}/recipe.json"))
keep = open(f"{parts}/keep.bin", "rb").read()
b = bytearray(recipe["total"])
header = open(f"{parts}/header.bin", "rb").read()
b[:len(header)] = header
for t in recipe["tensors"]:
    src, size = t["from"], t["size"]
    if t["tile"]:
        part = keep[src:src + t["tile"]]
        chunk = (part * (size // len(part) + 1))[:size]
    else:
        chunk = keep[src:src + size]
    assert len(chunk) == size, t["name"]
    at = recipe["start"] + t["offset"]
    b[at:at + size] = chunk
open(out, "wb").write(b)
print(f"wrote {out}: {len(b)} B")
