"""Zero-cost proxies: scores of an untrained network that are meant to rank architectures.

- :func:`synflow` (Tanaka et al. 2020; Abdelfattah et al., ICLR 2021): with every weight
  replaced by its absolute value and BatchNorm in ``eval()`` mode (so it is an affine map),
  the sum over parameters of ``|theta * dR/dtheta|`` where ``R`` is the sum of the network's
  output for an all-ones input. Computed in float64, since the product of many layers
  overflows float32 in deep networks.
- :func:`naswot` (Mellor et al., ICML 2021, "Neural Architecture Search without Training"):
  the log-determinant of the kernel ``K[i, j]`` = number of ReLUs on which images ``i`` and
  ``j`` agree (both active or both inactive), over one batch.

Both leave the network's weights as they found them.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def synflow(net: nn.Module, input_shape: tuple[int, ...]) -> float:
    """SynFlow score of ``net`` for one input of ``input_shape`` (C, H, W)."""
    model = copy.deepcopy(net).double()
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad(set_to_none=True)
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=_device(model))
    model(x).sum().backward()
    score = sum((p * p.grad).abs().sum().item() for p in model.parameters() if p.grad is not None)
    return float(score)


@torch.no_grad()
def naswot(net: nn.Module, x: Tensor) -> float:
    """NASWOT score of ``net`` on the (normalised) batch ``x`` (train-mode BN)."""
    codes: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        codes.append((output.flatten(1) > 0).to(torch.float64))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    was_training = net.training
    state = copy.deepcopy(net.state_dict())
    try:
        net.train()
        net(x)
    finally:
        for h in handles:
            h.remove()
        net.load_state_dict(state)  # BN running statistics moved in train mode
        net.train(was_training)
    c = torch.cat(codes, 1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else float("-inf")


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
