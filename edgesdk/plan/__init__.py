"""edgesdk.plan: the memory planner and strategy advisor behind `edgesdk plan`.

Given a model and a target profile, it estimates — per precision the target accepts — the weight bytes (by kind),
the peak activation bytes at a batch × sequence (liveness over the ONNX graph with inferred shapes), the runtime
workspace and the total against the profile's memory budget, finds the largest batch and sequence that fit, and
recommends a quantization strategy (optionally after a quick PTQ trial). `--check BUNDLE` runs a bundle in a fresh
process and prints the estimate beside the measured peak RSS. Heavy libraries load only inside the functions.
"""

from __future__ import annotations

SCHEMA = "edgesdk.plan/1"

__all__ = ["SCHEMA"]
