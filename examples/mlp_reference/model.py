"""The MLP of the reference comparison: Linear → ReLU → Linear, 64 features in, 10 logits out.

A factory file as edgesdk reads it (`--model examples/mlp_reference/model.py:build --input-shape 1,64`); the trained
weights come separately (`--weights mlp.safetensors`).
"""

from torch import nn

FEATURES, HIDDEN, CLASSES = 64, 256, 10


def build() -> nn.Sequential:
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
