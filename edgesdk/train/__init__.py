"""Training for edge export: FP32 fine-tuning of a classification head and quantization-aware training (NNCF)."""

from .classifier import fine_tune, is_classifier, model_labels, quantization_aware_train, read_record
from .loop import TrainConfig

__all__ = ["TrainConfig", "fine_tune", "quantization_aware_train", "is_classifier", "model_labels", "read_record"]
