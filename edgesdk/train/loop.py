"""Fine-tuning a sequence classifier in PyTorch: one loop shared by the FP32 fine-tune and QAT.

Seeded (python, numpy, torch, data order), a progress bar per run, and a checkpoint every `checkpoint_every`
steps and at the end, written atomically (safetensors + a JSON sidecar, never pickle: see `checkpoint`): a run
interrupted (Ctrl-C, a closed laptop) resumes from its last checkpoint when started again with the same settings;
a checkpoint written under other settings is refused rather than silently mixed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..evaluate import LabelledSet

log = logging.getLogger("edgesdk")
LOOP_VERSION = 2  # part of every fingerprint: a change to how the loop trains invalidates reused models


@dataclass(frozen=True)
class TrainConfig:
    """Defaults finish on 2 CPU cores in minutes on a subset; `limit=None, epochs=3` is a full run."""

    epochs: float = 2.0
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    limit: int | None = 8000  # training rows used (a seeded random subset); None = all
    seed: int = 0
    warmup: float = 0.06  # share of steps with a linear warm-up
    weight_decay: float = 0.01
    freeze_word_embeddings: bool = True  # 12M of MiniLM's 23M parameters; SST-2-sized data barely moves them
    checkpoint_every: int = 100
    device: str = "auto"  # "auto" = CUDA when torch sees a GPU, else CPU; not part of the fingerprint

    def check(self) -> None:
        bad = [(name, value) for name, value in (("epochs", self.epochs), ("lr", self.lr),
                                                 ("batch_size", self.batch_size), ("max_length", self.max_length))
               if not value or value <= 0]
        if self.limit is not None and self.limit < 1:
            bad.append(("limit", self.limit))
        if bad:
            name, value = bad[0]
            raise InputError(f"training setting {name}={value} must be positive (--{name.replace('_', '-')}).")

    def fingerprint(self, *extra: str) -> str:
        settings = {k: v for k, v in asdict(self).items() if k != "device"}
        blob = json.dumps([LOOP_VERSION, settings, *extra], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"training device '{name}' asked for, but torch sees no CUDA GPU; use --device cpu.")
    return name


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def subset(data: LabelledSet, limit: int | None, seed: int) -> LabelledSet:
    """A seeded random subset (all rows when limit is None or ≥ the data)."""
    order = list(range(len(data.texts)))
    random.Random(seed).shuffle(order)
    order = order[:limit] if limit else order
    return LabelledSet(tuple(data.texts[i] for i in order), tuple(data.labels[i] for i in order))


def batches(data: LabelledSet, label_index: dict[str, int], tokenize: Callable, config: TrainConfig,
            epoch: int):
    """Shuffled (per epoch, seeded) mini-batches of (feeds, labels) as torch tensors, padded to the batch max.

    Length-grouped like transformers' LengthGroupedSampler: rows are shuffled, cut into mega-batches of 50 batches,
    sorted by length inside each, and the batches are shuffled again. Batches stay random in content and order,
    but little of each is padding (SST-2 phrases run 1-50 words): about half the compute of plain shuffling.
    """
    import torch

    rng = random.Random(config.seed * 1000 + epoch)
    order = list(range(len(data.texts)))
    rng.shuffle(order)
    mega = 50 * config.batch_size
    order = [i for start in range(0, len(order), mega)
             for i in sorted(order[start:start + mega], key=lambda i: len(data.texts[i].split()))]
    chunks = [order[s:s + config.batch_size] for s in range(0, len(order), config.batch_size)]
    rng.shuffle(chunks)
    device = resolve_device(config.device)
    for rows in chunks:
        feeds = tokenize([data.texts[i] for i in rows])
        yield {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}, \
            torch.tensor([label_index[data.labels[i]] for i in rows], device=device)


def train(model, data: LabelledSet, label_index: dict[str, int], tokenize: Callable, config: TrainConfig,
          checkpoint: Path, description: str, progress: bool = True) -> dict:
    """Cross-entropy fine-tuning with AdamW and a linear schedule; returns what the run did, for the record."""
    import torch

    seed_everything(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    if config.freeze_word_embeddings:
        for name, param in model.named_parameters():
            if name.endswith("word_embeddings.weight"):
                param.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(data.texts) / config.batch_size)
    total = max(1, round(steps_per_epoch * config.epochs))
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warm = max(1, int(total * config.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    step, losses = _resume(model, optimizer, schedule, checkpoint, config)
    started = time.perf_counter()
    model.train()
    with _bar(description, total, step, progress) as advance:
        epoch = step // steps_per_epoch
        while step < total:
            for i, (feeds, labels) in enumerate(batches(data, label_index, tokenize, config, epoch)):
                if epoch * steps_per_epoch + i < step:  # resumed mid-epoch: skip the batches already seen
                    continue
                loss = torch.nn.functional.cross_entropy(model(**feeds).logits, labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(loss.item())
                advance(float(np.mean(losses[-50:])))
                if step % config.checkpoint_every == 0 or step == total:
                    _save_checkpoint(model, optimizer, schedule, checkpoint, config, step, losses)
                if step >= total:
                    break
            epoch += 1
    model.eval()
    seconds = time.perf_counter() - started
    log.info("%s: %d steps (batch %d) on %s in %.0fs, final loss %.4f", description, total, config.batch_size,
             device, seconds, float(np.mean(losses[-50:])))
    return {"steps": total, "rows": len(data.texts), "epochs": config.epochs, "seconds": round(seconds, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 4), "config": asdict(config),
            "device": _device_name(device), "threads": _threads()}


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _resume(model, optimizer, schedule, checkpoint: Path, config: TrainConfig) -> tuple[int, list[float]]:
    from . import checkpoint as ckpt

    try:
        found = ckpt.load(checkpoint, model=model, optimizer=optimizer, schedule=schedule,
                          fingerprint=config.fingerprint())
    except ckpt.FingerprintMismatch:
        raise InputError(f"checkpoint '{checkpoint}' was written with other training settings; delete it to "
                         "start over, or rerun with the settings it was made with.") from None
    return found or (0, [])


def _save_checkpoint(model, optimizer, schedule, checkpoint: Path, config: TrainConfig, step: int,
                     losses: list[float]) -> None:
    from . import checkpoint as ckpt

    ckpt.save(checkpoint, model=model, optimizer=optimizer, schedule=schedule, fingerprint=config.fingerprint(),
              step=step, losses=losses)


class _bar:
    """A rich progress bar (steps, running loss, ETA); a no-op when progress is off."""

    def __init__(self, description: str, total: int, done: int, enabled: bool):
        self.description, self.total, self.done, self.enabled = description, total, done, enabled
        self.progress = None

    def __enter__(self):
        if not self.enabled:
            return lambda loss: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
        self.progress.start()
        task = self.progress.add_task(self.description, total=self.total, completed=self.done, loss="-")
        return lambda loss: self.progress.update(task, advance=1, loss=f"{loss:.4f}")

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
