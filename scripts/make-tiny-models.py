#!/usr/bin/env python3
"""Build tiny synthetic models for Kiln's tests, in the model-repository layout.

Writes `<out>/<name>/<version>/model.onnx` or `model.xml`+`model.bin`. Nothing is
downloaded: every graph is built here with the `onnx` helper API, and the IR variants
are converted with `openvino.convert_model` + `save_model(compress_to_fp16=False)`.

Models (inputs -> outputs):
  add_sub/1        ONNX  INPUT0, INPUT1 FP32 [-1,16] -> OUTPUT0 = a+b, OUTPUT1 = a-b
  add_sub/2        IR    same graph as version 1, converted to OpenVINO IR
  identity_int32/1 ONNX  INPUT0 INT32 [-1,-1] -> OUTPUT0 = INPUT0
  scale_fp16/1     ONNX  INPUT0 FP16 [-1,8] -> OUTPUT0 = 2*INPUT0 (FP16)
  static_matmul/1  IR    INPUT0 FP32 [1,4] -> OUTPUT0 FP32 [1,3] = INPUT0 @ W (W[i,j] = i*3+j)
  dtypes/1         ONNX  one input per dtype (in_bool, in_uint8, in_int8, in_int16,
                         in_int64, in_fp64, in_uint16, in_uint32, in_uint64) -> out_<same>,
                         each a non-trivial elementwise op (NOT for bool, x+x otherwise)

Idempotent: a stamp file records a hash of this script and the OpenVINO/onnx versions;
when it matches and every file exists, nothing is rewritten.
"""

import argparse
import hashlib
import os
import sys
import tempfile

try:
    import numpy as np
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(
        f"make-tiny-models: missing Python package ({exc}). Create the project venv: "
        "python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt"
    )

OPSET = 17
STAMP = ".kiln-tiny-models.stamp"


def onnx_model(name, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(
        graph, producer_name="kiln-make-tiny-models", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def add_sub():
    a = helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 16])
    b = helper.make_tensor_value_info("INPUT1", TensorProto.FLOAT, ["batch", 16])
    s = helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 16])
    d = helper.make_tensor_value_info("OUTPUT1", TensorProto.FLOAT, ["batch", 16])
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub"),
    ]
    return onnx_model("add_sub", nodes, [a, b], [s, d])


def identity_int32():
    x = helper.make_tensor_value_info("INPUT0", TensorProto.INT32, ["batch", "n"])
    y = helper.make_tensor_value_info("OUTPUT0", TensorProto.INT32, ["batch", "n"])
    nodes = [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"], name="identity")]
    return onnx_model("identity_int32", nodes, [x], [y])


def scale_fp16():
    x = helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT16, ["batch", 8])
    y = helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT16, ["batch", 8])
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float16), "two")
    nodes = [helper.make_node("Mul", ["INPUT0", "two"], ["OUTPUT0"], name="scale")]
    return onnx_model("scale_fp16", nodes, [x], [y], [two])


def static_matmul():
    x = helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1, 3])
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    nodes = [helper.make_node("MatMul", ["INPUT0", "W"], ["OUTPUT0"], name="matmul")]
    return onnx_model("static_matmul", nodes, [x], [y], [w])


DTYPES = [
    ("bool", TensorProto.BOOL),
    ("uint8", TensorProto.UINT8),
    ("int8", TensorProto.INT8),
    ("int16", TensorProto.INT16),
    ("int64", TensorProto.INT64),
    ("fp64", TensorProto.DOUBLE),
    ("uint16", TensorProto.UINT16),
    ("uint32", TensorProto.UINT32),
    ("uint64", TensorProto.UINT64),
]


def dtypes():
    inputs, outputs, nodes = [], [], []
    for name, ty in DTYPES:
        inputs.append(helper.make_tensor_value_info(f"in_{name}", ty, ["n"]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", ty, ["n"]))
        if ty == TensorProto.BOOL:
            nodes.append(helper.make_node("Not", [f"in_{name}"], [f"out_{name}"], name=f"op_{name}"))
        else:
            nodes.append(
                helper.make_node("Add", [f"in_{name}", f"in_{name}"], [f"out_{name}"], name=f"op_{name}")
            )
    return onnx_model("dtypes", nodes, inputs, outputs)


def write_onnx(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)


def write_ir(model, xml_path):
    """Convert an ONNX graph to OpenVINO IR (xml+bin) without FP16 compression."""
    os.makedirs(os.path.dirname(xml_path), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "model.onnx")
        onnx.save(model, src)
        ov_model = ov.convert_model(src)
        ov.save_model(ov_model, xml_path, compress_to_fp16=False)


PLAN = [
    ("add_sub/1/model.onnx", add_sub, "onnx"),
    ("add_sub/2/model.xml", add_sub, "ir"),
    ("identity_int32/1/model.onnx", identity_int32, "onnx"),
    ("scale_fp16/1/model.onnx", scale_fp16, "onnx"),
    ("static_matmul/1/model.xml", static_matmul, "ir"),
    ("dtypes/1/model.onnx", dtypes, "onnx"),
]


def expected_files(out):
    files = []
    for rel, _, kind in PLAN:
        files.append(os.path.join(out, rel))
        if kind == "ir":
            files.append(os.path.join(out, rel[: -len(".xml")] + ".bin"))
    return files


def fingerprint():
    with open(os.path.abspath(__file__), "rb") as f:
        body = f.read()
    h = hashlib.sha256(body)
    h.update(f"openvino={ov.__version__};onnx={onnx.__version__}".encode())
    return h.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="model repository directory to write")
    parser.add_argument("--force", action="store_true", help="rebuild even when current")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    stamp = os.path.join(out, STAMP)
    fp = fingerprint()
    if not args.force and os.path.exists(stamp):
        with open(stamp) as f:
            current = f.read().strip() == fp
        if current and all(os.path.exists(p) for p in expected_files(out)):
            print(f"make-tiny-models: {out} is current")
            return 0
    for rel, build, kind in PLAN:
        path = os.path.join(out, rel)
        model = build()
        if kind == "onnx":
            write_onnx(model, path)
        else:
            write_ir(model, path)
        print(f"make-tiny-models: wrote {path}")
    os.makedirs(out, exist_ok=True)
    with open(stamp, "w") as f:
        f.write(fp + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
