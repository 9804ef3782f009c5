"""edgesdk.runtime: the on-device side. Needs numpy, tokenizers and one runtime; never torch, onnx or the exporter.

    from edgesdk.runtime import load
    runner = load("dist/all-minilm-l6-v2-intel-int8", threads=1)
    vectors = runner.embed(["hello world"])       # [1, 384], L2-normalised, like sentence-transformers
"""

from .manifest import Bundle, read_bundle
from .runner import Classification, Runner, load

__all__ = ["Bundle", "Classification", "Runner", "load", "read_bundle"]
