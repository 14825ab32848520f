"""The torch kind's network layout, shared by its runner (which trains it) and the model loader (which rebuilds it).

A stored torch model (format ``mlledger.mlp.v1``) holds only the layer sizes and
the ``state_dict``; both sides build the same ``nn.Sequential`` from the sizes.
"""

from __future__ import annotations

import itertools
from typing import Any


def mlp(sizes: list[int]) -> Any:
    """Linear layers of ``sizes`` with ReLU between them."""
    from torch import nn

    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(width_in, width_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
