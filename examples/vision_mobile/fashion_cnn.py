"""A small MobileNet-style CNN for 1×28×28 grayscale images (Fashion-MNIST), 10 classes.

A 3×3 stem, then depthwise-separable blocks (3×3 depthwise Conv + BatchNorm + activation, 1×1 pointwise Conv +
BatchNorm + activation), ReLU in the early blocks and HardSwish in the later ones as in MobileNetV3, global average
pooling and one Linear layer. No bias before a BatchNorm: export folds each BatchNorm into its Conv.
Read by edgesdk as `--model examples/vision_mobile/fashion_cnn.py:build --input-shape 1,1,28,28`.
"""

from torch import nn

CLASSES = 10
# (output channels, stride, activation) per depthwise-separable block
BLOCKS = ((32, 1, "relu"), (64, 2, "relu"), (64, 1, "relu"), (128, 1, "hardswish"), (256, 1, "hardswish"),
          (256, 1, "hardswish"))
ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def conv_bn(cin: int, cout: int, kernel: int, stride: int, act: str, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), ACTIVATIONS[act]())


def separable(cin: int, cout: int, stride: int, act: str) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cin, 3, stride, act, groups=cin), conv_bn(cin, cout, 1, 1, act))


class FashionCNN(nn.Module):
    """features → global average pool → classifier. A module with its own forward, not a bare nn.Sequential:
    NNCF's QAT attaches its hook storage as a child module, which a top-level Sequential would try to run."""

    def __init__(self):
        super().__init__()
        layers, cin = [conv_bn(1, 16, 3, 2, "relu")], 16  # stride 2: 14×14 from the start (CPU training time)
        for cout, stride, act in BLOCKS:
            layers.append(separable(cin, cout, stride, act))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(cin, CLASSES)

    def forward(self, x):
        return self.classifier(self.dropout(self.pool(self.features(x)).flatten(1)))


def build() -> FashionCNN:
    return FashionCNN()
