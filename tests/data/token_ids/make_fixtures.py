#!/usr/bin/env python3
"""Writes the token-id files of tests/data/test_token_ids.cpp with NumPy itself (np.save and
np.lib.format.write_array) and a safetensors file laid out by its specification (8-byte little-endian header
length, JSON header padded with spaces to a multiple of 8, then the data). Run offline; the outputs are
committed. usage: make_fixtures.py [OUT_DIR]"""
import json
import os
import struct
import sys

import numpy as np

out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
ids = np.array([[0, 1, 2], [50255, 50256, 7]])  # flattened: 0 1 2 50255 50256 7


def save(name, arr, version=None):
    with open(os.path.join(out, name), "wb") as f:
        if version is None:
            np.save(f, arr)
        else:
            np.lib.format.write_array(f, arr, version=version)


save("i4.npy", ids.astype("<i4"))
save("u2.npy", ids.astype("<u2"))
save("u4_v2.npy", ids.astype("<u4"), version=(2, 0))
save("i8_be_v3.npy", ids.astype(">i8"), version=(3, 0))
save("u1.npy", np.array([3, 1, 4, 1, 5], dtype="u1"))
save("scalar.npy", np.array(42, dtype="<i8"))
save("empty.npy", np.zeros((0, 5), dtype="<i4"))
save("fortran_column.npy", np.asfortranarray(ids.astype("<i4")[:, :1]))  # one column: order does not matter
save("fortran.npy", np.asfortranarray(ids.astype("<i4")))
save("f4.npy", ids.astype("<f4"))
save("structured.npy", np.zeros(2, dtype=[("a", "<i4")]))


def safetensors(name, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for key, (dtype, arr) in tensors.items():
        data = arr.tobytes()
        header[key] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


safetensors("u4.safetensors", {"input_ids": ("U32", ids.astype("<u4"))}, {"source": "test"})
safetensors("i64.safetensors", {"ids": ("I64", ids.astype("<i8"))})
safetensors("two.safetensors", {"a": ("I32", ids.astype("<i4")), "b": ("I32", ids.astype("<i4"))})
safetensors("f32.safetensors", {"x": ("F32", ids.astype("<f4"))})
with open(os.path.join(out, "ids.txt"), "w") as f:
    f.write("0 1 2\n50255\t50256\r\n  7\n")
