"""BLAST-CT (V1) DeepMedic network, re-implemented from shared/models/blast-ct/MODEL_CARD.md.

Module names reproduce the upstream state-dict keys exactly (``path(5, 5, 5)0.path.1.bn.weight``
...) so that the 12 ``model_NN.pt`` files load with ``strict=True``. Only the build step
(conversion to OpenVINO) imports this module; the runtime never imports torch.

Crops follow the card (section 3.5) for any valid input size. When every output size is a
multiple of 30 (all tile sizes we export) the crops reduce to fixed offsets from both ends
(f=5: 0, f=3: 16, f=1: 32 voxels, no output crop), so the traced graph contains only
shape-independent slices and the converted IR can be reshaped to any such tile size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

N_CLASSES = 5
FACTORS: tuple[int, ...] = (5, 3, 1)
PATHWAY_CHANNELS: tuple[tuple[int, int], ...] = (
    (1, 30), (30, 30), (30, 40), (40, 40), (40, 40), (40, 40), (40, 50), (50, 50),
)
HEAD_CHANNELS: tuple[tuple[int, int, float], ...] = ((150, 250, 0.0), (250, 250, 0.5), (250, 5, 0.5))
MARGIN = 40  # output = input - 80 per axis
PARAMETER_COUNT = 1_030_033


class Block(nn.Module):
    """Pre-activation block: BN -> dropout -> PReLU -> valid conv (+ cropped identity if C_in == C_out)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, p_drop: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm3d(c_in)
        self.dropout = nn.Dropout(p_drop)
        self.prelu = nn.PReLU(num_parameters=1)
        self.conv = nn.Conv3d(c_in, c_out, kernel_size=kernel, bias=False)
        self.residual = c_in == c_out
        self.trim = (kernel - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.prelu(self.dropout(self.bn(x))))
        if self.residual:
            t = self.trim
            y = y + (x[:, :, t:-t, t:-t, t:-t] if t else x)
        return y


class Downsample(nn.Module):
    """Strided subsampling at offset floor(f/2) (no pooling, card pitfall 6)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor
        if f == 1:
            return x
        o = f // 2
        return x[:, :, o::f, o::f, o::f]


class Upsample(nn.Module):
    """Nearest-neighbour repetition by the integer factor."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        return F.interpolate(x, scale_factor=float(self.factor), mode="nearest")


def _centre_start(c: int, s: int) -> int:
    return c // 2 - s // 2


class Pathway(nn.Module):
    """One resolution pathway: input crop, subsample, 8 blocks, upsample, output crop."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        layers: list[nn.Module] = [Downsample(factor)]
        layers += [Block(ci, co, 3) for ci, co in PATHWAY_CHANNELS]
        layers.append(Upsample(factor))
        self.path = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor
        in_sizes = [int(s) for s in x.shape[2:]]
        out_sizes = [n - 2 * MARGIN for n in in_sizes]
        if all(o % 30 == 0 for o in out_sizes):
            # Shape-independent form (see module docstring): fixed offset from both ends.
            a = MARGIN - 8 * f
            y = x[:, :, a:-a, a:-a, a:-a] if a else x
            return self.path(y)
        sl = []
        for n, o in zip(in_sizes, out_sizes):
            length = f * (math.ceil(o / f) + 16)
            s0 = _centre_start(n, length)
            sl.append(slice(s0, s0 + length))
        y = self.path(x[:, :, sl[0], sl[1], sl[2]])
        osl = []
        for c, o in zip(y.shape[2:], out_sizes):
            s0 = _centre_start(int(c), o)
            osl.append(slice(s0, s0 + o))
        return y[:, :, osl[0], osl[1], osl[2]]


class BlastCtNet(nn.Module):
    """Three-pathway DeepMedic: input [B, 1, D, H, W] (each a multiple of 5, >= 85) -> logits [B, 5, D-80, H-80, W-80]."""

    def __init__(self) -> None:
        super().__init__()
        for i, f in enumerate(FACTORS):
            # Exact upstream names, e.g. "path(5, 5, 5)0" (card pitfall 1 and 2).
            self.add_module(f"path{(f, f, f)}{i}", Pathway(f))
        self.fully_connected = nn.Sequential(*[Block(ci, co, 1, p) for ci, co, p in HEAD_CHANNELS])

    def pathways(self) -> list[Pathway]:
        return [getattr(self, f"path{(f, f, f)}{i}") for i, f in enumerate(FACTORS)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n in x.shape[2:]:
            if int(n) < 85 or int(n) % 5:
                raise ValueError(f"input size {int(n)} is not valid: need a multiple of 5 and >= 85")
        feats = torch.cat([p(x) for p in self.pathways()], dim=1)
        return self.fully_connected(feats)


def load_blastct(path: Path) -> BlastCtNet:
    """Load one ``model_NN.pt`` (legacy pickle state dict) strictly, in eval mode."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = BlastCtNet()
    net.load_state_dict(state, strict=True)
    net.eval()
    log.debug("loaded %s", path)
    return net


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
