"""Tiny models, data and losses for trainer and handler tests (also imported by the subprocess workers)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from synclr_monai.engines import ContrastiveTrainer

CUBE = 16


class TinyNet(nn.Module):
    """A 3D conv projector without batch norm: ``[N, 3, S, S, S] -> [N, 8]``; records its activation dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, stride=2)
        self.head = nn.Linear(4, 8)
        self.seen_dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        self.seen_dtypes.append(h.dtype)
        return self.head(torch.relu(h).mean(dim=(2, 3, 4)))


def mean_pair_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """A per-sample loss averaged over the batch (so half batches average to the full batch's gradient)."""
    return ((z1 - z2) ** 2).sum(dim=1).mean()


class ViewDataset(Dataset):
    """Deterministic random two-view samples ``{"view1", "view2", "fallback"}``; records sampling-mode calls."""

    def __init__(self, n: int = 8, size: int = CUBE, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.view1 = torch.randn(n, 3, size, size, size, generator=g)
        self.view2 = self.view1 + 0.5 * torch.randn(n, 3, size, size, size, generator=g)
        self.mode = "random"
        self.mode_calls: list[str] = []
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return len(self.view1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        # in mask-aware mode every odd sample "falls back" to random sampling
        fallback = int(self.mode == "mask_aware" and i % 2 == 1)
        return {"view1": self.view1[i], "view2": self.view2[i], "fallback": fallback}

    def set_sampling_mode(self, mode: str) -> None:
        self.mode = mode
        self.mode_calls.append(mode)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def make_loader(n: int = 8, batch_size: int = 4, seed: int = 0, **kwargs: Any) -> DataLoader:
    return DataLoader(ViewDataset(n, seed=seed), batch_size=batch_size, shuffle=False, **kwargs)


def make_trainer(
    max_epochs: int = 1,
    loader: Any = None,
    network: nn.Module | None = None,
    lr: float = 0.1,
    momentum: float = 0.0,
    seed: int = 0,
    **kwargs: Any,
) -> ContrastiveTrainer:
    """A ContrastiveTrainer on TinyNet with SGD and ``mean_pair_loss`` unless overridden."""
    torch.manual_seed(seed)
    network = TinyNet() if network is None else network
    kwargs.setdefault("loss_function", mean_pair_loss)
    return ContrastiveTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=make_loader() if loader is None else loader,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum),
        **kwargs,
    )


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
