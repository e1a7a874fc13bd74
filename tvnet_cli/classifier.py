"""Action classifier written for this project (no torchvision): a ResNet-style network on a
stack of flow fields `(B, 2K, H, W)` or RGB frames `(B, 3, H, W)`, and the end-to-end
model TVNet -> flow stack -> classifier with TSN consensus over segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TVNetError
from .model import TVNet


@dataclass(frozen=True)
class ClassifierConfig:
    """ResNet shape: `width` channels in the first stage, doubled per stage."""

    depth: int = 18  # 10 (1 block per stage), 18 (2), 34 (3-4-6-3)
    width: int = 64  # 64 = ResNet-18/34 width; 8-16 for tiny CPU models
    dropout: float = 0.5


_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    """ResNet-10/18/34 for `in_channels` inputs `(B, C, H, W)` -> logits `(B, classes)`."""

    def __init__(self, in_channels: int, num_classes: int, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        if config.depth not in _BLOCKS:
            raise TVNetError(f"classifier depth must be one of {sorted(_BLOCKS)}, not {config.depth}")
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], w
        for stage, n in enumerate(_BLOCKS[config.depth]):
            cout = w * 2**stage
            for b in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.drop = nn.Dropout(config.dropout)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(self.drop(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


MODALITIES = ("flow", "rgb", "two-stream")


class ActionModel(nn.Module):
    """TVNet + classifier on clips `(B, S, L, 3, H, W)` (S segments of L frames).

    flow stream: L-1 flow fields per stack, `(B*S, 2(L-1), H, W)`, scaled by 1/`flow_bound`
    and clipped to [-1, 1] (as flow JPEGs quantised with that bound). rgb stream: the middle
    frame of each stack. Segment scores are averaged (TSN consensus); two-stream averages
    the two streams' logits. `forward` returns `(logits (B, classes), L_f scalar)`.
    """

    def __init__(self, tvnet: TVNet, num_classes: int, length: int, modality: str = "flow",
                 config: ClassifierConfig = ClassifierConfig(), flow_bound: float = 20.0,
                 checkpoint_pairs: int = 0) -> None:
        super().__init__()
        if modality not in MODALITIES:
            raise TVNetError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
        if length < 2 and modality != "rgb":
            raise TVNetError(f"a flow stack needs at least 2 frames, got {length}")
        self.tvnet = tvnet
        self.modality = modality
        self.length = length
        self.flow_bound = flow_bound
        self.checkpoint_pairs = checkpoint_pairs
        self.flow_net = ResNet(2 * (length - 1), num_classes, config) if modality != "rgb" else None
        self.rgb_net = ResNet(3, num_classes, config) if modality != "flow" else None

    def _flow_energy(self, f0: torch.Tensor, f1: torch.Tensor, with_energy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame pairs `(P, 3, H, W)` -> flow `(P, 2, H, W)` and per-pair L_f `(P,)`."""
        frozen = not any(p.requires_grad for p in self.tvnet.parameters())
        with torch.autocast(f0.device.type, enabled=False), torch.set_grad_enabled(
                torch.is_grad_enabled() and not frozen):  # float32 TV-L1; no graph for a frozen TVNet
            i0, i1 = self.tvnet.prepare(f0, f1)
            flow = self.tvnet.solve(i0, i1)
            if with_energy:
                return flow, self.tvnet.energy(flow, i0, i1)
            return flow, flow.new_zeros(flow.shape[0])

    def flow_stack(self, clips: torch.Tensor, with_energy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips `(N, L, 3, H, W)` -> flow stack `(N, 2(L-1), H, W)` pixels, mean L_f.

        With `checkpoint_pairs` > 0 and autograd on, TVNet runs in chunks of that many
        pairs under activation checkpointing: the unrolled iterations are recomputed in
        the backward pass instead of stored (memory of one chunk instead of all pairs).
        """
        n, L = clips.shape[:2]
        f0 = clips[:, :-1].reshape(n * (L - 1), *clips.shape[2:])
        f1 = clips[:, 1:].reshape(n * (L - 1), *clips.shape[2:])
        chunk = self.checkpoint_pairs
        if chunk > 0 and torch.is_grad_enabled() and any(p.requires_grad for p in self.tvnet.parameters()):
            from torch.utils.checkpoint import checkpoint

            parts = [checkpoint(self._flow_energy, a, b, with_energy, use_reentrant=False)
                     for a, b in zip(f0.split(chunk), f1.split(chunk))]
            flow = torch.cat([p[0] for p in parts])
            energy = torch.cat([p[1] for p in parts])
        else:
            flow, energy = self._flow_energy(f0, f1, with_energy)
        return flow.reshape(n, 2 * (L - 1), *flow.shape[-2:]), energy.mean()

    def forward(self, clips: torch.Tensor, with_energy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        b, s = clips.shape[:2]
        flat = clips.reshape(b * s, *clips.shape[2:])  # (B*S, L, 3, H, W)
        logits = []
        energy = clips.new_zeros((), dtype=torch.float32)
        if self.flow_net is not None:
            flow, energy = self.flow_stack(flat, with_energy)
            x = (flow / self.flow_bound).clamp(-1.0, 1.0)
            logits.append(self.flow_net(x).reshape(b, s, -1).mean(dim=1))
        if self.rgb_net is not None:
            rgb = flat[:, flat.shape[1] // 2].float() / 127.5 - 1.0  # (B*S, 3, H, W)
            logits.append(self.rgb_net(rgb).reshape(b, s, -1).mean(dim=1))
        return torch.stack(logits).mean(dim=0), energy
