"""Time the classifier fine-tune and QAT (edgesdk.train) on this machine's CPU or GPU, and score both in PyTorch.

    python scripts/train_speed.py --model MODEL_DIR --train sst2/train.tsv --dev sst2/dev.tsv --json out.json
    python scripts/train_speed.py ... --train-limit 0 --epochs 3      # the full SST-2 train set

Needs torch, transformers, tokenizers and nncf (not onnx or the runtimes): it runs where only training runs,
e.g. a GPU box, and writes the trained models under --out for the export machine to pick up
(`edgesdk export --train-data ...` reuses a model folder whose record matches).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="encoder folder (e.g. all-MiniLM-L6-v2)")
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--out", default="train-speed")
    p.add_argument("--target", default="android", help="whose QuantSpec drives QAT (default android)")
    p.add_argument("--train-limit", type=int, default=8000)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--qat-limit", type=int, default=2000)
    p.add_argument("--qat-epochs", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    import torch

    from edgesdk.evaluate import accuracy, read_labelled
    from edgesdk.profiles import load_profile
    from edgesdk.quant import QuantSpec
    from edgesdk.train import TrainConfig, fine_tune, quantization_aware_train, read_record
    from edgesdk.train.classifier import predict_labels
    from edgesdk.train.pipeline import QAT_DEFAULTS

    data = read_labelled(args.train, min_classes=2)
    out = Path(args.out)
    config = replace(TrainConfig(), limit=args.train_limit or None, epochs=args.epochs, device=args.device)
    qat_config = replace(QAT_DEFAULTS, limit=args.qat_limit or None, epochs=args.qat_epochs, device=args.device)
    started = time.perf_counter()
    fp32 = fine_tune(Path(args.model), data, out / "fp32", config, progress=False)
    fp32_s = time.perf_counter() - started
    spec = QuantSpec.from_profile(load_profile(args.target))
    started = time.perf_counter()
    qat = quantization_aware_train(fp32, spec, [args.target], data, out / "qat", qat_config, progress=False)
    qat_s = time.perf_counter() - started

    def dev_accuracy(folder: Path) -> float:
        from transformers import AutoModelForSequenceClassification

        dev = read_labelled(args.dev)
        device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
        model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval().to(device)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        return accuracy(predict_labels(model, folder, dev.texts, device), dev.labels, names)

    result = {"device": read_record(fp32)["training"]["device"], "torch": torch.__version__,
              "fp32": dict(read_record(fp32)["training"], wall_s=round(fp32_s, 1), dev_accuracy=dev_accuracy(fp32)),
              "qat": dict(read_record(qat)["training"], wall_s=round(qat_s, 1), dev_accuracy=dev_accuracy(qat))}
    for key in ("fp32", "qat"):
        result[key].pop("config", None)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
