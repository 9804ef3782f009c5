"""Graph passes on the FP32 ONNX: constant folding, dead-code and common-subexpression elimination, fusion,
shape inference — each a named pass from onnxslim / onnx, with a before/after report of node counts by op type.
"""

from .passes import PASSES, GraphReport, optimize

__all__ = ["PASSES", "GraphReport", "optimize"]
