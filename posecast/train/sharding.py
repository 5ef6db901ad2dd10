"""FSDP for distillation (`posecast distill --fsdp` under torchrun): models too large for one
GPU are sharded block by block with PyTorch's FSDP2 (`fully_shard`), so each process holds
1/G of every weight, gradient and optimiser state.

Checkpoints stay in the one safetensors format: the full state dicts are gathered (a collective
call every process makes) and optimiser states are keyed by parameter index as in
`Optimizer.state_dict()`, so a sharded run can resume an unsharded one and back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(model: nn.Module) -> None:
    """Shard each of `model.blocks` (a DiT's transformer blocks, a MimicMotion UNet's down, mid
    and up blocks), then the rest (embeddings, heads, the pose network)."""
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)


def _names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def full_states(modules: dict[str, nn.Module],
                optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]]
                ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Gathered state dicts of sharded modules and of optimizers over them (collective; with
    CPU offload only rank 0 receives them, the others get empty dicts)."""
    module_states = {name: get_model_state_dict(module, options=FULL)
                     for name, module in modules.items()}
    optimizer_states = {}
    for name, (module, optimizer) in optimizers.items():
        by_name = get_optimizer_state_dict(module, optimizer, options=FULL)
        if not by_name:
            optimizer_states[name] = {}
            continue
        index = {param: i for i, param in enumerate(_names(module))}
        optimizer_states[name] = {
            "state": {index[param]: fields for param, fields in by_name["state"].items()},
            "param_groups": [{**group, "params": [index[p] for p in group["params"]]}
                             for group in by_name["param_groups"]]}
    return module_states, optimizer_states


def load_full_states(modules: dict[str, nn.Module],
                     optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]],
                     module_states: dict[str, dict], optimizer_states: dict[str, dict]) -> None:
    """Put full (unsharded) state dicts into sharded modules and optimizers."""
    for name, module in modules.items():
        set_model_state_dict(module, module_states[name], options=FULL)
    for name, (module, optimizer) in optimizers.items():
        names = _names(module)
        state = optimizer_states[name]
        by_name = {"state": {names[int(i)]: fields for i, fields in state["state"].items()},
                   "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                                    for group in state["param_groups"]]}
        set_optimizer_state_dict(module, optimizer, by_name, options=FULL)
