#!/usr/bin/env python3
"""Writes the tiny ONNX models used by hostcalls/nn's tests, bench and examples.

classify.onnx: a 4-feature, 3-class linear classifier.
    input  x      float32 [1, 4]
    output logits float32 [1, 3]  = x @ W + b
    output probs  float32 [1, 3]  = softmax(logits)
The weights below are the ground truth the tests recompute; they are also
written to classify.weights.json for gpu_check.py.

Needs only the `onnx` package (tested with onnx 1.19.1):
    python3 -m venv .venv && .venv/bin/pip install onnx==1.19.1
    .venv/bin/python examples/nn-models/make_models.py
The output is deterministic; the .onnx files are committed so CI needs no Python.
"""

import json
import os

import onnx
from onnx import TensorProto, helper

# W is [4, 3] (features x classes), row-major; b is [3].
W = [
    0.5, -1.0, 0.25,
    1.0, 0.5, -0.5,
    -0.25, 0.75, 1.0,
    2.0, -0.5, 0.125,
]
B = [0.1, -0.2, 0.3]


def classify() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], W)
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], B)
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(nodes, "classify", [x], [logits, probs], initializer=[w, b])
    model = helper.make_model(
        graph,
        producer_name="wasm-sandbox",
        opset_imports=[helper.make_opsetid("", 13)],
    )
    # IR 8 / opset 13: loadable by every ONNX Runtime since 1.10.
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "classify.onnx")
    onnx.save(classify(), path)
    print(f"{path}: {os.path.getsize(path)} bytes")
    # The same weights for machines without `onnx` (gpu_check.py builds the
    # model in torch from them).
    weights = os.path.join(here, "classify.weights.json")
    with open(weights, "w") as f:
        json.dump({"W": [W[i : i + 3] for i in range(0, 12, 3)], "b": B}, f)
        f.write("\n")
    print(weights)


if __name__ == "__main__":
    main()
