#!/usr/bin/env python3
"""KServe v2 conformance of kilnd, driven by the unmodified tritonclient over a Unix socket.

Run by tests/tests/inference.rs against a kilnd serving a repository built with
scripts/make-tiny-models.py (plus the demo MiniLM when --minilm is given). Compares served
outputs with numpy or in-process OpenVINO (CPU, f32 precision hint), within a tolerance derived
from the precision kilnd reports for each model (--precision NAME=P, from `kilnctl models list`).
Prints one `ok <check>` line per check and exits 0; any failure raises (exit 1) with the check's
name.
"""

import argparse
import sys

import grpc
import numpy as np
import openvino as ov
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg
from tritonclient.utils import InferenceServerException

CORE = ov.Core()


def ok(name):
    print(f"ok {name}", flush=True)


# Unit roundoff of each inference precision.
ROUNDOFF = {"f32": 2.0**-24, "bf16": 2.0**-8, "f16": 2.0**-11}


def assert_close(got, ref, precision, ops, what):
    """`got` equals the exact `ref` to within rounding at `precision` over `ops` chained
    roundings: relative 2·ops·u, and the same times the reference's scale absolute (sums
    that cancel)."""
    tol = 2 * ops * ROUNDOFF[precision]
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(float(np.abs(ref).max()), 1e-30)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), ref, rtol=tol, atol=tol * scale,
                               err_msg=f"{what} at {precision} (tolerance {tol:.1e})")


def local(path, feeds):
    """In-process OpenVINO on CPU with full f32 precision."""
    model = CORE.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = model(feeds)
    return {out.get_any_name(): res[out] for out in model.outputs}


def infer(client, model, arrays, version="", outputs=None):
    inputs = []
    for name, a in arrays.items():
        i = tc.InferInput(name, list(a.shape), tc.np_to_triton_dtype(a.dtype))
        i.set_data_from_numpy(a)
        inputs.append(i)
    outs = [tc.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer(model, inputs, model_version=version, outputs=outs)


def expect_status(what, code, fn, *needles):
    try:
        fn()
    except grpc.RpcError as e:
        got, msg = e.code(), e.details()
    except InferenceServerException as e:
        got, msg = e.status(), e.message()
    else:
        raise AssertionError(f"{what}: expected {code}, the call succeeded")
    name = code.name if isinstance(code, grpc.StatusCode) else code
    assert name in str(got), f"{what}: expected {name}, got {got}: {msg}"
    for n in needles:
        assert n in msg, f"{what}: message lacks {n!r}: {msg}"
    ok(f"{what} -> {name}")


def raw_request(model, tensors, version="", outputs=()):
    """A ModelInferRequest with raw contents (tensors: name, datatype, shape, bytes)."""
    req = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, dt, shape, data in tensors:
        t = req.inputs.add()
        t.name, t.datatype = name, dt
        t.shape.extend(shape)
        if data is not None:
            req.raw_input_contents.append(data)
    for o in outputs:
        req.outputs.add().name = o
    return req


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--minilm", action="store_true")
    ap.add_argument("--max-message-bytes", type=int, required=True)
    ap.add_argument("--precision", action="append", default=[],
                    help="NAME=P: the precision kilnd reports for model NAME")
    ap.add_argument("--bf16-cpu", action="store_true",
                    help="the CPU runs bf16 natively (AVX512-BF16 or AMX): check the forced-bf16 model")
    args = ap.parse_args()
    prec = dict(p.split("=", 1) for p in args.precision)
    P = lambda name: prec.get(name, "f32")  # noqa: E731
    url = f"unix://{args.socket}"
    client = tc.InferenceServerClient(url)
    stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(url))
    repo = args.repo
    rng = np.random.default_rng(7)

    assert client.is_server_live() and client.is_server_ready()
    md = client.get_server_metadata()
    assert md.name == "kiln", md
    assert {"model_repository", "statistics"} <= set(md.extensions), md.extensions
    ok("live, ready, server metadata with extensions")

    # Version policy latest:1: add_sub v2 (IR) is served, v1 (ONNX) is not.
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "2")
    assert not client.is_model_ready("add_sub", "1")
    mm = client.get_model_metadata("add_sub")
    assert mm.versions == ["2"], mm.versions
    assert [(i.name, i.datatype, list(i.shape)) for i in mm.inputs] == [
        ("INPUT0", "FP32", [-1, 16]),
        ("INPUT1", "FP32", [-1, 16]),
    ], mm.inputs
    assert [o.name for o in mm.outputs] == ["OUTPUT0", "OUTPUT1"]
    ok("model ready per version policy, model metadata")

    a = rng.standard_normal((3, 16), dtype=np.float32)
    b = rng.standard_normal((3, 16), dtype=np.float32)
    r = infer(client, "add_sub", {"INPUT0": a, "INPUT1": b})
    ref = local(f"{repo}/add_sub/2/model.xml", {"INPUT0": a, "INPUT1": b})
    assert_close(r.as_numpy("OUTPUT0"), ref["OUTPUT0"], P("add_sub"), 1, "add_sub OUTPUT0")
    assert_close(r.as_numpy("OUTPUT1"), a.astype(np.float64) - b, P("add_sub"), 1, "add_sub OUTPUT1")
    assert r.get_response().model_version == "2"
    r = infer(client, "add_sub", {"INPUT0": a, "INPUT1": b}, outputs=["OUTPUT1"])
    assert r.as_numpy("OUTPUT0") is None and r.as_numpy("OUTPUT1") is not None
    ok("add_sub raw infer equals in-process OpenVINO; requested outputs honoured")

    x = rng.integers(-(2**31), 2**31 - 1, size=(2, 5), dtype=np.int32)
    np.testing.assert_array_equal(infer(client, "identity_int32", {"INPUT0": x}).as_numpy("OUTPUT0"), x)
    h = rng.standard_normal((4, 8)).astype(np.float16)
    out = infer(client, "scale_fp16", {"INPUT0": h}).as_numpy("OUTPUT0")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, h * np.float16(2))
    m = rng.standard_normal((1, 4), dtype=np.float32)
    w = np.array([[3 * i + j for j in range(3)] for i in range(4)], dtype=np.float32)
    exact = m.astype(np.float64) @ w
    assert_close(infer(client, "static_matmul", {"INPUT0": m}).as_numpy("OUTPUT0"), exact,
                 P("static_matmul"), 4, "static_matmul")
    ok(f"INT32, FP16 (raw) and static IR weights (static_matmul at {P('static_matmul')})")
    if "static_matmul_bf16" in prec:
        got = infer(client, "static_matmul_bf16", {"INPUT0": m}).as_numpy("OUTPUT0")
        if args.bf16_cpu:
            assert P("static_matmul_bf16") == "bf16", prec
            assert_close(got, exact, "bf16", 4, "static_matmul_bf16")
            f32 = infer(client, "static_matmul", {"INPUT0": m}).as_numpy("OUTPUT0")
            assert not np.array_equal(got, f32), "bf16 reported but the result equals the f32 one"
            ok("precision = bf16 is served in bf16 and reported so")
        else:
            print("skip: precision = bf16 check (this CPU has neither AVX512-BF16 nor AMX)", flush=True)

    dmeta = client.get_model_metadata("dtypes")
    feeds = {}
    for i in dmeta.inputs:
        dt = tc.triton_to_np_dtype(i.datatype)
        shape = [2 if d < 0 else d for d in i.shape]
        if dt == np.bool_:
            feeds[i.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dt, np.integer):
            feeds[i.name] = rng.integers(0, 100, size=shape).astype(dt)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(dt)
    r = infer(client, "dtypes", feeds)
    ref = local(f"{repo}/dtypes/1/model.onnx", feeds)
    for o in dmeta.outputs:
        assert_close(r.as_numpy(o.name), ref[o.name], P("dtypes"), 1, f"dtypes {o.name}")
    ok(f"{len(dmeta.outputs)} dtypes equal in-process OpenVINO")

    # Typed contents in, typed contents out (binary_data=false).
    req = pb.ModelInferRequest(model_name="add_sub")
    for name, arr in (("INPUT0", a[:1]), ("INPUT1", b[:1])):
        t = req.inputs.add()
        t.name, t.datatype = name, "FP32"
        t.shape.extend([1, 16])
        t.contents.fp32_contents.extend(arr.ravel().tolist())
    o = req.outputs.add()
    o.name = "OUTPUT0"
    o.parameters["binary_data"].bool_param = False
    resp = stub.ModelInfer(req)
    assert len(resp.raw_output_contents) == 0
    assert_close(resp.outputs[0].contents.fp32_contents, (a[:1].astype(np.float64) + b[:1]).ravel(),
                 P("add_sub"), 1, "typed add_sub")
    ok("typed contents in and out")

    good = [("INPUT0", "FP32", [1, 16], a[:1].tobytes()), ("INPUT1", "FP32", [1, 16], b[:1].tobytes())]
    call = lambda req: (lambda: stub.ModelInfer(req))  # noqa: E731
    C = grpc.StatusCode
    expect_status("unknown model", C.NOT_FOUND, call(raw_request("nope", good)), "nope")
    expect_status("unknown version", C.NOT_FOUND, call(raw_request("add_sub", good, version="9")), "9")
    expect_status("version not loaded", C.UNAVAILABLE, call(raw_request("add_sub", good, version="1")), "add_sub", "1")
    bad = [("INPUT0", "INT32", [1, 16], a[:1].tobytes()), good[1]]
    expect_status("wrong dtype", C.INVALID_ARGUMENT, call(raw_request("add_sub", bad)), "INPUT0", "expected FP32")
    bad = [("INPUT0", "FP32", [2, 8], a[:1].tobytes()), good[1]]
    expect_status("wrong shape", C.INVALID_ARGUMENT, call(raw_request("add_sub", bad)), "INPUT0", "[-1, 16]")
    bad = [("INPUT0", "FP32", [1, 16], a[:1].tobytes()[:60]), good[1]]
    expect_status("wrong byte size", C.INVALID_ARGUMENT, call(raw_request("add_sub", bad)), "INPUT0", "expected 64")
    req = pb.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        t = req.inputs.add()
        t.name, t.datatype = name, "FP32"
        t.shape.extend([1, 16])
        t.contents.fp32_contents.extend([1.0] * (15 if name == "INPUT1" else 16))
    expect_status("wrong element count", C.INVALID_ARGUMENT, call(req), "INPUT1", "expected 16")
    expect_status("missing input", C.INVALID_ARGUMENT, call(raw_request("add_sub", good[:1])), "INPUT1")
    bad = good + [("EXTRA", "FP32", [1, 16], a[:1].tobytes())]
    expect_status("unknown input", C.INVALID_ARGUMENT, call(raw_request("add_sub", bad)), "EXTRA")
    expect_status("unknown output", C.INVALID_ARGUMENT, call(raw_request("add_sub", good, outputs=["OUT9"])), "OUT9")
    # 1.25x the limit in total: above it, below the transport's hard ceiling (2x).
    n = args.max_message_bytes * 5 // 8 // 64 + 1
    big = rng.standard_normal((n, 16), dtype=np.float32).tobytes()
    bad = [("INPUT0", "FP32", [n, 16], big), ("INPUT1", "FP32", [n, 16], big)]
    expect_status("over-size request", C.INVALID_ARGUMENT, call(raw_request("add_sub", bad)), "max_message_bytes")
    assert client.is_server_live()
    r = infer(client, "add_sub", {"INPUT0": a, "INPUT1": b})
    assert_close(r.as_numpy("OUTPUT0"), a.astype(np.float64) + b, P("add_sub"), 1, "add_sub after bad input")
    ok("daemon keeps serving after every malformed request")

    st = client.get_inference_statistics("add_sub")
    s = st.model_stats[0]
    assert s.name == "add_sub" and s.version == "2", s
    assert s.inference_stats.success.count >= 4, s
    assert s.inference_stats.fail.count >= 7, s
    assert s.inference_stats.compute_infer.ns > 0 and s.execution_count >= 4, s
    assert s.last_inference > 0
    ok(f"statistics: {s.inference_stats.success.count} ok, {s.inference_stats.fail.count} failed")

    idx = {(m.name, m.version): m for m in client.get_model_repository_index().models}
    assert idx[("add_sub", "2")].state == "READY", idx
    assert idx[("add_sub", "1")].state == "UNAVAILABLE", idx
    assert idx[("static_matmul", "1")].state == "READY"
    ok(f"repository index lists {len(idx)} versions")

    client.unload_model("add_sub")
    assert not client.is_model_ready("add_sub")
    expect_status("infer after unload", C.UNAVAILABLE, call(raw_request("add_sub", good)), "add_sub")
    assert {(m.name, m.version): m.state for m in client.get_model_repository_index().models}[("add_sub", "2")] == "UNAVAILABLE"
    client.load_model("add_sub")
    assert client.is_model_ready("add_sub", "2")
    r = infer(client, "add_sub", {"INPUT0": a, "INPUT1": b})
    assert_close(r.as_numpy("OUTPUT1"), a.astype(np.float64) - b, P("add_sub"), 1, "add_sub after reload")
    expect_status("load unknown model", C.NOT_FOUND, lambda: client.load_model("nope"))
    ok("unload and load through the repository extension")

    if args.minilm:
        mm = client.get_model_metadata("minilm")
        assert [i.name for i in mm.inputs] == ["input_ids", "attention_mask", "token_type_ids"], mm.inputs
        ids = np.zeros((1, 128), dtype=np.int64)
        toks = [101, 7592, 2088, 2003, 1037, 3231, 102]
        ids[0, : len(toks)] = toks
        mask = (ids != 0).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        r = infer(client, "minilm", feeds, outputs=["sentence_embedding"])
        ref = local(f"{repo}/minilm/1/model.xml", feeds)
        emb = r.as_numpy("sentence_embedding")
        assert emb.shape == (1, 384), emb.shape
        # Six encoder layers: allow 8 chained roundings at the served precision.
        assert_close(emb, ref["sentence_embedding"], P("minilm"), 8, "MiniLM sentence_embedding")
        assert abs(float(np.linalg.norm(emb)) - 1.0) < 16 * ROUNDOFF[P("minilm")] + 1e-6
        ok(f"MiniLM sentence embedding equals in-process OpenVINO (served at {P('minilm')})")
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
