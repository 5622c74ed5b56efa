#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write the fuzz targets' seed inputs into fuzz/corpus/TARGET/.

Small valid inputs of each format and a few near-valid ones (one field
wrong), so that the fuzzers start from the parsers' interesting paths
instead of having to discover the formats.  Run from the source tree's
top directory; the output is committed, so this only needs running when a
format changes.  Inputs that carry two files (idx, idx_gz, checkpoint)
start with the first file's length as two big-endian bytes
(fuzz_split in fuzz/fuzz.h)."""
import gzip
import json
import os
import struct

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(TOP, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    # mtime 0: the same bytes on every run
    return gzip.compress(data, mtime=0)


def pair(a, b):
    return struct.pack(">H", len(a)) + a + b


# ---- config
with open(os.path.join(TOP, "configs", "mlp_layers.ini"), "rb") as f:
    put("config", "mlp_layers.ini", f.read())
put("config", "train.ini",
    "[data]\ndir = data\nformat = csv\n\n[train]\nepochs = 3\n"
    "learning_rate = 1e-3 ; comment\nshuffle = no\n\n[model]\ntype = twolayer\n")
put("config", "layer_twice.ini",
    "[model]\ntype = sequential\n[layer fc1]\ntype = dense\n"
    "[layer fc1]\nunits = 3\n")
put("config", "bad_syntax.ini",
    "# a comment\n[train]\n  epochs = 0\nbatch_size\n[unclosed\nkey = v\n")


# ---- idx (images, labels)
def idx_images(n, rows, cols, pixels):
    return struct.pack(">IIII", 0x803, n, rows, cols) + bytes(pixels)


def idx_labels(n, labels):
    return struct.pack(">II", 0x801, n) + bytes(labels)


small_img = idx_images(2, 4, 4, range(32))
small_lab = idx_labels(2, [3, 7])
with open(os.path.join(TOP, "tests", "data", "t10k-images-idx3-ubyte"),
          "rb") as f:
    mnist_img = idx_images(1, 28, 28, f.read()[16:16 + 784])
mnist_lab = idx_labels(1, [7])
for target in ("idx", "idx_gz"):
    put(target, "small", pair(small_img, small_lab))
    put(target, "mnist_one", pair(mnist_img, mnist_lab))
    put(target, "count_mismatch", pair(small_img, idx_labels(3, [1, 2, 3])))
    put(target, "truncated", pair(small_img[:-5], small_lab))
put("idx", "gzip_both", pair(gz(small_img), gz(small_lab)))
put("idx", "gzip_cut", pair(gz(mnist_img)[:-20], mnist_lab))

# ---- csv
for target in ("csv", "csv_gz"):
    put(target, "small.csv", "5,0,255,3\n1,2,3,4\n")
    put(target, "crlf.csv", "0,1\r\n9,200\r\n\r\n")
    put(target, "ragged.csv", "1,2,3\n4,5\n")
mnist_line = "7," + ",".join(str(b) for b in mnist_img[16:]) + "\n"
put("csv", "mnist_one.csv", mnist_line)
put("csv", "gzip.csv.gz", gz(b"5,0,255,3\n1,2,3,4\n"))
put("csv", "gzip_cut.csv.gz", gz(mnist_line.encode())[:-12])


# ---- safetensors
def safetensors(tensors, meta=None, pad=True):
    """tensors: (name, dtype, shape, values) in data order."""
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, values in tensors:
        fmt = "<%d%s" % (len(values), "d" if dtype == "F64" else "f")
        raw = struct.pack(fmt, *values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


put("safetensors", "f64.safetensors", safetensors(
    [("W", "F64", [2, 3], [0.5, -1, 2, 3, 4, 5]), ("b", "F64", [3], [0, 1, 2])],
    {"format": "nnrun"}))
put("safetensors", "f32.safetensors", safetensors(
    [("W", "F32", [1, 2], [1.5, -2]), ("s", "F32", [], [3])], pad=False))
put("safetensors", "3d.safetensors", safetensors(
    [("t", "F64", [1, 2, 1], [1, 2]), ("e", "F64", [0, 4], [])]))
put("safetensors", "overlap.safetensors",
    struct.pack("<Q", 107) +
    b'{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},'
    b'"b":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}' + bytes(8))


# ---- checkpoint (last.safetensors, best.safetensors)
def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


params = [("fc1.W", "F64", [2, 2], [1, 2, 3, 4]), ("fc1.b", "F64", [2], [0, 1])]
best = safetensors(params, {"format": "nnrun", "model": "sequential",
                            "epoch": "1", "val_accuracy": "0.5"})
last_meta = {"format": "nnrun", "model": "sequential", "optimizer": "sgd",
             "epoch": "2", "best_epoch": "1", "best_val_accuracy": "0.5",
             "rng_state": "0123456789abcdef",
             "nnrun.optimizer_state": "fc1.W.m,fc1.b.m",
             "best_fnv1a64": "%016x" % fnv1a64(best)}
last = safetensors(params + [("fc1.W.m", "F64", [2, 2], [0, 0, 0, 0]),
                             ("fc1.b.m", "F64", [2], [0, 0])], last_meta)
put("checkpoint", "pair", pair(last, best))
put("checkpoint", "last_only", pair(last, b""))
ahead = safetensors(params, {"format": "nnrun", "model": "sequential",
                             "epoch": "3", "val_accuracy": "0.75"})
put("checkpoint", "best_ahead", pair(last, ahead))
no_best = dict(last_meta, best_epoch="-1")
del no_best["best_fnv1a64"]
put("checkpoint", "no_best_epoch", pair(safetensors(params, no_best), best))
# Empty names in the optimizer-state list: one slot each.
empty_names = dict(last_meta, **{"nnrun.optimizer_state": ",,,"})
put("checkpoint", "state_list_empty_names",
    pair(safetensors(params, empty_names), b""))
