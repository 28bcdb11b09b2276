#!/usr/bin/python3
"""Writes the torch.save fixtures of tests/io/test_torch_pickle.cpp and, next to each X.pt, X.expected.safetensors:
every tensor the reader must find, flattened with dots as the reader does, as contiguous little-endian bytes.

Run with Debian's /usr/bin/python3 and python3-torch (1.13):  /usr/bin/python3 make_fixtures.py
The expected files are written by hand below (the safetensors layout: 8-byte header length, JSON, data), from
torch's own .contiguous() bytes, so they do not depend on the reader under test. Seeds are fixed: rerunning
gives identical files.
"""
import collections
import io
import json
import os
import struct
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def raw_bytes(t):
    """Row-major little-endian bytes of t (this machine is little-endian)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def flatten(v, prefix, out):
    """The reader's semantics: dicts flattened with dots, string keys only, tensors kept, the rest skipped."""
    if isinstance(v, torch.Tensor):
        out[prefix] = v
    elif isinstance(v, dict):
        for k, x in v.items():
            if isinstance(k, str):
                flatten(x, k if not prefix else prefix + "." + k, out)
    return out


def write_expected(path, obj):
    tensors = flatten(obj, "", {})
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        b = raw_bytes(t)
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def save(name, obj, **kw):
    path = os.path.join(HERE, name + ".pt")
    torch.save(obj, path, **kw)
    check(path, obj)
    write_expected(os.path.join(HERE, name + ".expected.safetensors"), obj)
    return path


def check(path, obj):
    """torch.load must give back what was saved, so the fixtures are valid torch.save files."""
    back = torch.load(path)
    a, b = flatten(obj, "", {}), flatten(back, "", {})
    assert a.keys() == b.keys(), path
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and raw_bytes(a[k]) == raw_bytes(b[k]), (path, k)


def rezip(src, dst, compression, extra=None):
    """Copies a torch.save archive member by member with another compression (and extra members)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compression) as zout:
        prefix = zin.infolist()[0].filename.split("/")[0] + "/"  # torch.save names the folder after the file
        members = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
        members += [(prefix + name, data) for name, data in (extra or {}).items()]
        for name, data in members:  # a fixed date: the same bytes on every run
            zout.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=compression)


def main():
    torch.manual_seed(20240611)

    # Every supported dtype, small shapes.
    dtypes = {
        "f32": torch.randn(3, 4),
        "f64": torch.randn(5, dtype=torch.float64),
        "f16": torch.randn(2, 3).half(),
        "bf16": torch.randn(4).bfloat16(),
        "i64": torch.arange(-3, 3, dtype=torch.int64) * 1_000_000_007,
        "i32": torch.tensor([-2**31, 0, 2**31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-32768, 1, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
    }
    save("dtypes", dtypes)

    # Views: non-contiguous tensors must come out in logical row-major order; slices keep a storage offset.
    base = torch.arange(10, dtype=torch.float32)
    m = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    views = {
        "base": base,
        "slice": base[2:5],                       # storage offset 2, shares base's storage
        "every_third": base[::3],                 # stride 3
        "transposed": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),
        "column": m[:, 1],                        # offset 1, stride 4
        "block": m[1:, 1:3],                      # offset 5, strides (4, 1)
        "permuted": torch.randn(2, 3, 4).permute(2, 0, 1),
        "expanded": torch.arange(3, dtype=torch.int64).expand(2, 3),   # stride 0
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "half_t": torch.randn(3, 2).half().t(),
    }
    save("views", views)

    # Nested checkpoint: model weights under "model", other values skipped, int keys skipped.
    nested = {
        "model": {"fc.weight": torch.randn(2, 3), "fc.bias": torch.randn(2), "deeper": {"x": torch.ones(2)}},
        "epoch": 3,
        "name": "run-1",
        "best": 0.25,
        "done": True,
        "nothing": None,
        "history": [1.0, 2.0, torch.zeros(1)],          # tensors in lists are not weights: skipped
        "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
    }
    save("nested", nested)

    # An nn.Module's state dict: an OrderedDict with _metadata, BatchNorm running stats, num_batches_tracked.
    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    net.train()
    net(torch.randn(16, 4))  # moves running_mean/var and counts one batch
    save("module", net.state_dict())

    # Parameters (pickled through torch._utils._rebuild_parameter) and a buffer.
    torch.manual_seed(11)
    params = {"weight": torch.nn.Parameter(torch.randn(2, 2)), "frozen": torch.nn.Parameter(torch.randn(3), requires_grad=False),
              "buffer": torch.arange(4)}
    save("parameters", params)

    # Pickle protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL ... instead of protocol 2's opcodes).
    save("protocol4", dtypes, pickle_protocol=4)
    # Protocol 1: no PROTO opcode, text INT "I00" for False. (Protocol 0 writes a text persistent id that
    # torch.load itself cannot read, so it is not a torch.save format.)
    save("protocol1", dtypes, pickle_protocol=1)

    # The same archive with deflated members and a byteorder record (as PyTorch >= 2.1 writes).
    src = os.path.join(HERE, "dtypes.pt")
    dst = os.path.join(HERE, "deflated.pt")
    rezip(src, dst, zipfile.ZIP_DEFLATED, {"byteorder": b"little"})
    check(dst, dtypes)
    write_expected(os.path.join(HERE, "deflated.expected.safetensors"), dtypes)

    # A bare tensor (not a dict): the reader names it "".
    torch.save(torch.arange(5, dtype=torch.int32), os.path.join(HERE, "bare_tensor.pt"))

    # A pickled module object, not a state dict: the reader must say so.
    torch.save(collections.Counter(a=1), os.path.join(HERE, "counter.pt"))


if __name__ == "__main__":
    main()
