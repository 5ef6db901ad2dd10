"""The skeleton every trainer shares (teacher training, MimicMotion fine-tuning, distillation):
restore a checkpoint, step with one report per step in train_log.jsonl, save a checkpoint
every N steps and at the end; sharded (FSDP) or not."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from torch import nn

from posecast.errors import UsageError
from posecast.train.checkpoint import (
    damaged,
    load_checkpoint,
    open_for_resume,
    open_log,
    read_checkpoint,
)
from posecast.train.distributed import Distributed

Owners = dict[str, nn.Module]  # the module each optimiser steps (sharded runs)
T = TypeVar("T")


def resumed(out: Path, read: Callable[[dict[str, Any]], T]) -> tuple[Path, T]:
    """The newest checkpoint in `out` and what `read` makes of the state saved with it (the
    run's settings); a one-line error for a damaged one."""
    found, saved = open_for_resume(out)
    try:
        return found, read(saved)
    except (ValueError, KeyError, TypeError, UsageError) as error:
        raise damaged(found, error) from None


def restore(found: Path, modules: dict[str, nn.Module],
            optimizers: dict[str, torch.optim.Optimizer], owners: Owners | None = None
            ) -> dict[str, Any]:
    """Load the checkpoint `found` into `modules` and `optimizers` (into their shards when
    `owners` is given: a sharded run); a one-line error for a damaged one. Returns its
    state (step, and what the trainer saved with it)."""
    try:
        if owners is None:
            return load_checkpoint(found, modules, optimizers)
        from posecast.train import sharding

        meta, module_states, optimizer_states = read_checkpoint(found, list(modules),
                                                                list(optimizers))
        sharding.load_full_states(modules, _owned(optimizers, owners), module_states,
                                  optimizer_states)
        return meta
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as error:
        raise damaged(found, error) from None


def full_states(modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                owners: Owners | None = None) -> tuple[dict, dict]:
    """What to save: the modules and optimisers themselves, or, sharded (`owners`), their
    states gathered from every process (a collective: every process must call it)."""
    if owners is None:
        return modules, optimizers
    from posecast.train import sharding

    return sharding.full_states(modules, _owned(optimizers, owners))


def _owned(optimizers: dict, owners: Owners) -> dict:
    return {name: (owners[name], optimizer) for name, optimizer in optimizers.items()}


def run_steps(out: Path, env: Distributed, step: int, total: int, checkpoint_every: int,
              take_step: Callable[[int], Any], save: Callable[[int], None],
              on_step: Callable | None = None) -> None:
    """Steps `step` … total − 1: `take_step(step)` does one step's work and returns its
    report (a dataclass: one JSON line of train_log.jsonl, written by the main process, and
    passed to `on_step`); after the N-th step, `save(N)` runs on every process when N is a
    multiple of `checkpoint_every` or the last."""
    log = open_log(out, step) if env.is_main else None
    try:
        while step < total:
            report = take_step(step)
            step += 1
            if log is not None:
                log.write(json.dumps(dataclasses.asdict(report)) + "\n")
                log.flush()
                if on_step is not None:
                    on_step(report)
            if step % checkpoint_every == 0 or step == total:
                save(step)
    finally:
        if log is not None:
            log.close()


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash((seed, step, rank)) & 0x7FFF_FFFF_FFFF_FFFF)


def apply_gradients(loss: torch.Tensor, module: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """One optimiser step on `loss`, gradients clipped to `grad_clip` in norm."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()
