"""Writes safetensors files with unusual headers and what the reference reader says of each.

Run where the `safetensors` Python package is installed (the GPU machine has it):
    python3 scripts/acceptance_corpus.py test/fixtures/acceptance
Outputs (small; committed): one `<case>.safetensors` per case and `verdicts.json`
({case: {"accepted": bool, "error": str | null}}). test/acceptance.test.ts requires
readSafetensors to accept exactly the files the reference accepts.
"""
import json
import os
import struct
import sys

from safetensors import safe_open
from safetensors.numpy import load

out = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/acceptance"
os.makedirs(out, exist_ok=True)

U8 = '"dtype":"U8","shape":[2],"data_offsets":[0,2]'


def entry(name, body=U8):
    return '{"%s":{%s}}' % (name, body)


def nest(depth):
    return "[" * depth + "]" * depth


# name -> (header text, data bytes). Text is encoded as UTF-8 unless given as bytes.
cases = {
    "baseline": (entry("x"), b"\x01\x02"),
    "shape-float": ('{"x":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}', b"\x01\x02"),
    "shape-exponent": ('{"x":{"dtype":"U8","shape":[2e0],"data_offsets":[0,2]}}', b"\x01\x02"),
    "offsets-float": ('{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2.0]}}', b"\x01\x02"),
    "shape-string": ('{"x":{"dtype":"U8","shape":["2"],"data_offsets":[0,2]}}', b"\x01\x02"),
    "shape-negative-zero": ('{"x":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}', b""),
    "offsets-three": ('{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2,2]}}', b"\x01\x02"),
    "missing-shape": ('{"x":{"dtype":"U8","data_offsets":[0,2]}}', b"\x01\x02"),
    "dtype-lowercase": ('{"x":{"dtype":"u8","shape":[2],"data_offsets":[0,2]}}', b"\x01\x02"),
    "duplicate-field": ('{"x":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"\x01\x02"),
    "duplicate-tensor": ('{"x":{%s},"x":{%s}}' % (U8, U8), b"\x01\x02"),
    "duplicate-metadata-key": ('{"__metadata__":{"a":"1","a":"2"},"x":{%s}}' % U8, b"\x01\x02"),
    "duplicate-metadata": ('{"__metadata__":{"a":"1"},"__metadata__":{"a":"2"},"x":{%s}}' % U8, b"\x01\x02"),
    "metadata-null": ('{"__metadata__":null,"x":{%s}}' % U8, b"\x01\x02"),
    "metadata-number": ('{"__metadata__":{"a":1},"x":{%s}}' % U8, b"\x01\x02"),
    "metadata-proto-key": ('{"__metadata__":{"__proto__":"p"},"x":{%s}}' % U8, b"\x01\x02"),
    "extra-field": ('{"x":{%s,"extra":{"a":[1,2,{"b":null}]}}}' % U8, b"\x01\x02"),
    "extra-field-depth-127": ('{"x":{%s,"extra":%s}}' % (U8, nest(125)), b"\x01\x02"),
    "extra-field-depth-129": ('{"x":{%s,"extra":%s}}' % (U8, nest(127)), b"\x01\x02"),
    "nesting-6000": ('{"x":{%s,"extra":%s}}' % (U8, nest(6000)), b"\x01\x02"),
    "bom": (b"\xef\xbb\xbf" + entry("x").encode(), b"\x01\x02"),
    "leading-space": (" " + entry("x"), b"\x01\x02"),
    "trailing-nul-padding": (entry("x").encode() + b"\x00\x00", b"\x01\x02"),
    "lone-high-surrogate-name": (entry("\\ud800"), b"\x01\x02"),
    "lone-low-surrogate-name": (entry("a\\udc00"), b"\x01\x02"),
    "surrogate-pair-name": (entry("\\ud83d\\ude00"), b"\x01\x02"),
    "escaped-slash-name": (entry("a\\/b"), b"\x01\x02"),
    "raw-tab-in-name": (entry("a\tb"), b"\x01\x02"),
    "proto-name": (entry("__proto__"), b"\x01\x02"),
    "constructor-name": (entry("constructor"), b"\x01\x02"),
    "proto-prefixed-name": (entry("__proto__.lora_a"), b"\x01\x02"),
    "trailing-garbage": (entry("x") + "x", b"\x01\x02"),
    "empty-header": ("{}", b""),
    "header-array": ("[]", b""),
    "true-literal-shape": ('{"x":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}', b"\x01"),
    "big-dim": ('{"x":{"dtype":"U8","shape":[9007199254740993,0],"data_offsets":[0,0]}}', b""),
}

verdicts = {}
for name, (header, data) in cases.items():
    h = header if isinstance(header, bytes) else header.encode("utf-8")
    blob = struct.pack("<Q", len(h)) + h + data
    with open(os.path.join(out, f"{name}.safetensors"), "wb") as f:
        f.write(blob)
    try:
        load(blob)
        # The file API parses the header too; both must agree.
        path = os.path.join(out, f"{name}.safetensors")
        with safe_open(path, framework="numpy") as f:
            list(f.keys())
        verdicts[name] = {"accepted": True, "error": None}
    except Exception as e:  # noqa: BLE001 - any refusal counts
        verdicts[name] = {"accepted": False, "error": f"{type(e).__name__}: {e}"[:300]}

with open(os.path.join(out, "verdicts.json"), "w") as f:
    json.dump(verdicts, f, indent=1, sort_keys=True)
    f.write("\n")
for name, v in sorted(verdicts.items()):
    print(f"{name:28} {'accepted' if v['accepted'] else 'refused '} {v['error'] or ''}")
