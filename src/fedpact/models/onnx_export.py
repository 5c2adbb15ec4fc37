"""Writing a trained model as an ONNX graph, from its weights alone.

Each model class describes its own layers (``Model.onnx_layers``), so a new model plugs
into ``fedpact model export`` by implementing that one method. The graph is built with
``onnx.helper`` from the float32 weights, without tracing a framework: exporting an MLP
does not need torch, and the file holds exactly the arithmetic fedpact runs.

The graph: input ``x`` (float32, ``[N, *sample_shape]``) -> the task's standardisation,
if it has one -> the model's layers -> ``probabilities`` ``[N, C]`` and ``label`` ``[N]``
(the task's class values, int64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedpact.common.extras import require

#: ONNX operator set the graphs use (Gemm, Conv, MaxPool, Softmax, ArgMax, Gather, Reshape).
OPSET = 17


class OnnxGraph:
    """A graph under construction: named nodes, initialisers (weights) and a running tensor name."""

    def __init__(self, sample_shape: Sequence[int]) -> None:
        require("onnx", "ONNX export")
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        """Add ``value`` as an initialiser; returns its name."""
        from onnx import numpy_helper

        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name=name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        """Add one node; returns the name of its (single) output."""
        from onnx import helper

        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def gemm(self, x: str, weight: np.ndarray, bias: np.ndarray) -> str:
        """``x @ weight.T + bias``, weight as ``[out, in]`` like a torch Linear."""
        w = self.const("weight", weight.astype(np.float32))
        b = self.const("bias", bias.astype(np.float32))
        return self.op("Gemm", [x, w, b], transB=1)

    def flatten(self, x: str) -> str:
        return self.op("Flatten", [x], axis=1)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.const("shape", np.asarray(shape, dtype=np.int64))])

    def to_bytes(self, logits: str, classes: Sequence[int], *, name: str = "fedpact-model") -> bytes:
        """Close the graph with softmax, argmax and the class values; returns the serialised model."""
        import onnx
        from onnx import TensorProto, helper

        probs = self.op("Softmax", [logits], axis=1)
        index = self.op("ArgMax", [probs], axis=1, keepdims=0)
        values = self.const("classes", np.asarray(list(classes), dtype=np.int64))
        label = self.op("Gather", [values, index], axis=0)
        self.nodes.append(helper.make_node("Identity", [probs], ["probabilities"]))
        self.nodes.append(helper.make_node("Identity", [label], ["label"]))
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *self.sample_shape])],
            [
                helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(classes)]),
                helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            ],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fedpact")
        onnx.checker.check_model(model)
        return bytes(model.SerializeToString())


def standardized_input(g: OnnxGraph, mean: np.ndarray | None, std: np.ndarray | None) -> str:
    """The graph input, standardised per feature when the task learned statistics."""
    if mean is None or std is None:
        return "x"
    flat = g.flatten("x")
    centred = g.op("Sub", [flat, g.const("mean", np.asarray(mean, dtype=np.float32).reshape(-1))])
    scaled = g.op("Div", [centred, g.const("std", np.asarray(std, dtype=np.float32).reshape(-1))])
    return g.reshape(scaled, [-1, *g.sample_shape])
