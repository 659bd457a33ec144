"""The one training loop every trained method uses (MKD, the autoencoders, Deep SVDD, STFPM).

A method supplies its trainable modules, an optimiser and a ``step(batch_indices) -> loss`` function;
the loop owns everything else, the same way for every method:

- **seeding**: the order of the training images in every epoch comes from a generator seeded with
  the run's seed; torch's global generator is seeded too (dropout, noise);
- **batches** of ``batch_size`` indices; a last batch of one image is skipped when the modules hold
  BatchNorm (its training statistics are undefined for one image); settings that leave an epoch
  without a single optimiser step (``batch_size: 1`` with BatchNorm) are an error, not an
  untrained model;
- **divergence**: a NaN/inf loss raises :class:`TrainingError` with the method, epoch and batch,
  before the optimiser step, so nothing diverged is saved;
- **history**: one record per epoch, ``{"phase", "epoch", "loss", "seconds", "images_per_second"}``,
  ``loss`` being the mean training loss over the epoch's images;
- **checkpoint and resume**: with ``checkpoint`` set, the modules, optimiser, generator states and
  history are written atomically after every epoch; a later call with the same ``fingerprint``
  resumes after the last finished epoch and ends with the same weights as an uninterrupted run
  (a checkpoint with another fingerprint, or with more epochs than asked for, is ignored and
  replaced). The fingerprint should not contain the epoch count: training for more epochs then
  continues a shorter run exactly as if it had been asked for from the start.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from kdad.atomic import write_atomic


class TrainingError(RuntimeError):
    """Training diverged (NaN/inf loss) or cannot start; the message says where and what to try."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def has_batchnorm(modules: Mapping[str, nn.Module]) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for mod in modules.values() for m in mod.modules())


def train(modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer,
          step: Callable[[torch.Tensor], torch.Tensor], n: int, *, epochs: int, batch_size: int, seed: int,
          what: str, phase: str = "train", checkpoint: str | os.PathLike | None = None,
          fingerprint: str = "", clip_grad_norm: float = 0.0, lr_hint: float | None = None,
          log: Callable[[str], None] | None = None) -> list[dict]:
    """Run ``epochs`` epochs of ``step`` over ``n`` training images; return the history.

    ``step(idx)`` gets a LongTensor of image indices and returns the batch's mean loss (a scalar
    with a graph); the loop does ``zero_grad → backward → (clip) → optimizer.step``.
    ``what`` names the run in messages ("mkd on fashion_mnist/one-class/Coat, seed 0").
    """
    log = log or _log
    if n < 1:
        raise TrainingError(f"{what}: no training images")
    if epochs < 0 or batch_size < 1:
        raise TrainingError(f"{what}: epochs must be ≥ 0 and batch_size ≥ 1 (got {epochs}, {batch_size})")
    min_batch = 2 if has_batchnorm(modules) and n >= 2 else 1
    steps = sum(1 for i in range(0, n, batch_size) if min(batch_size, n - i) >= min_batch)
    if epochs > 0 and steps == 0:
        raise TrainingError(f"{what}: batch_size {batch_size} with {n} training image(s) leaves no batch to train "
                            f"on (a batch of one image is skipped: the model holds BatchNorm); use batch_size ≥ 2")
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    start = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.is_file():
        try:  # tensors and plain data only: a planted file's objects are refused, never built
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise TrainingError(f"{what}: refusing to resume from {ckpt}: it holds objects other than tensors and "
                                "plain data, which loading could execute; kdad writes no such file — delete it "
                                "and run again") from None
        except Exception as err:  # a truncated file from a killed write of an older version
            log(f"{what}: ignoring unreadable checkpoint {ckpt} ({type(err).__name__})")
            state = None
        if state is not None and not isinstance(state, dict):
            log(f"{what}: ignoring {ckpt}, not a kdad checkpoint")
            state = None
        if (state is not None and state.get("fingerprint") == fingerprint and state.get("phase") == phase
                and state.get("epoch", 0) <= epochs):
            for name, module in modules.items():
                module.load_state_dict(state["modules"][name])
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history, start = state["history"], state["epoch"]
            log(f"{what}: resuming {phase} from {ckpt} after epoch {start}")
        elif state is not None:
            log(f"{what}: {ckpt} belongs to other settings or a longer run; starting afresh")
    for module in modules.values():
        module.train()
    for epoch in range(start, epochs):
        t0, total, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(n, generator=gen)
        for b, i in enumerate(range(0, n, batch_size)):
            idx = order[i:i + batch_size]
            if len(idx) < min_batch:
                continue
            loss = step(idx)
            if not torch.isfinite(loss):
                hint = f" (lr={lr_hint}); try a smaller learning rate" if lr_hint is not None else ""
                raise TrainingError(f"{what}: {phase} loss became {loss.item()} at epoch {epoch + 1}, batch {b}"
                                    f"{hint}; nothing was saved")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm > 0:
                nn.utils.clip_grad_norm_(params, clip_grad_norm)
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        seconds = time.perf_counter() - t0
        record = {"phase": phase, "epoch": epoch + 1, "loss": total / max(seen, 1), "seconds": seconds,
                  "images_per_second": seen / max(seconds, 1e-9)}
        history.append(record)
        log(f"{what}: {phase} epoch {epoch + 1}/{epochs}  loss {record['loss']:.5f}  "
            f"{record['images_per_second']:.0f} img/s")
        if ckpt is not None:
            save_atomic({"fingerprint": fingerprint, "phase": phase, "epoch": epoch + 1, "history": history,
                         "modules": {k: m.state_dict() for k, m in modules.items()},
                         "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                         "torch_rng": torch.get_rng_state()}, ckpt)
    for module in modules.values():
        module.eval()
    return history


def save_atomic(obj, path: str | os.PathLike) -> None:
    """``torch.save`` into a temporary file beside ``path``, then rename over it."""
    write_atomic(path, lambda f: torch.save(obj, f))
