"""Checks every model layer should pass (import as ``from layer_checks import ...``)."""

import torch
from torch import nn


def assert_reset_is_deterministic(module: nn.Module, seed: int) -> None:
    """``reset_parameters`` under one seed gives the same state twice: no hidden RNG state."""
    torch.manual_seed(seed)
    module.reset_parameters()
    first = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(seed)
    module.reset_parameters()
    for k, v in module.state_dict().items():
        assert torch.equal(v, first[k]), k
