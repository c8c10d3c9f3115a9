"""Two gloo processes with B pairs each give the single-process loss and gradients on 2B pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from synclr_monai.engines import shutdown_distributed
from synclr_monai.losses import NTXentLoss, nt_xent_loss

WORLD, B, D_IN, D = 2, 3, 5, 8
TEMPERATURE = 0.2
#: synapse ids of the global batch: synapse 4 has a cube on each rank, synapse 1 two on rank 0
SYNAPSE = torch.tensor([4, 1, 1, 4, -1, 2])


def _data() -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    """The global batch (2B pairs of inputs) and the model, identical in every process."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(WORLD * B, D_IN, generator=g)
    x2 = torch.randn(WORLD * B, D_IN, generator=g)
    torch.manual_seed(0)
    return x1, x2, nn.Linear(D_IN, D)


def _worker(rank: int, out_dir: str) -> None:
    # a file store: no free-port race with other tests
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=WORLD)
    try:
        x1, x2, model = _data()
        rows = slice(rank * B, (rank + 1) * B)
        loss_fn = NTXentLoss(TEMPERATURE)

        # 1) On the projections themselves.
        z1 = model(x1[rows]).detach().requires_grad_()
        z2 = model(x2[rows]).detach().requires_grad_()
        loss = loss_fn(z1, z2)
        loss.backward()

        # 2) Through a DDP model, as in training: DDP averages the parameter gradients over ranks.
        ddp = nn.parallel.DistributedDataParallel(model)
        ddp_loss = loss_fn(ddp(x1[rows]), ddp(x2[rows]))
        ddp_loss.backward()

        # 3) Cubes of one synapse kept out of each other's negatives, across ranks too.
        masked_loss = NTXentLoss(TEMPERATURE, mask_same_synapse=True)(
            model(x1[rows]).detach(), model(x2[rows]).detach(), SYNAPSE[rows]
        )

        # 4) Unequal batch sizes are refused on every rank.
        mismatch = ""
        try:
            loss_fn(torch.randn(B + rank, D), torch.randn(B + rank, D))
        except ValueError as e:
            mismatch = str(e)

        torch.save(
            {
                "loss": loss.detach(),
                "z1_grad": z1.grad,
                "z2_grad": z2.grad,
                "ddp_loss": ddp_loss.detach(),
                "weight_grad": model.weight.grad,
                "bias_grad": model.bias.grad,
                "mismatch": mismatch,
                "masked_loss": masked_loss,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
        shutdown_distributed(ddp)
    except BaseException:
        dist.destroy_process_group()  # no barrier: the other rank may never reach it
        raise


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_joint_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    # The single-process reference on the whole batch of WORLD * B pairs.
    x1, x2, model = _data()
    z1 = model(x1).detach().requires_grad_()
    z2 = model(x2).detach().requires_grad_()
    expected = nt_xent_loss(z1, z2, TEMPERATURE)
    expected.backward()
    model.zero_grad()
    nt_xent_loss(model(x1), model(x2), TEMPERATURE).backward()

    # Each rank averages over its own 2B anchors; the ranks' mean is the global mean.
    mean_loss = torch.stack([r["loss"] for r in results]).mean()
    torch.testing.assert_close(mean_loss, expected.detach())
    assert not torch.allclose(results[0]["loss"], results[1]["loss"])  # they really are different anchors
    for rank, r in enumerate(results):
        rows = slice(rank * B, (rank + 1) * B)
        # Gradient of the summed rank losses w.r.t. this rank's rows = WORLD x gradient of the global mean.
        torch.testing.assert_close(r["z1_grad"] / WORLD, z1.grad[rows])
        torch.testing.assert_close(r["z2_grad"] / WORLD, z2.grad[rows])
        # With DDP's averaging, the parameter gradients are those of the single-process loss.
        torch.testing.assert_close(r["weight_grad"], model.weight.grad)
        torch.testing.assert_close(r["bias_grad"], model.bias.grad)
        assert "batch sizes differ" in r["mismatch"]
    torch.testing.assert_close(torch.stack([r["ddp_loss"] for r in results]).mean(), expected.detach())
    masked = nt_xent_loss(model(x1).detach(), model(x2).detach(), TEMPERATURE, synapse=SYNAPSE)
    torch.testing.assert_close(torch.stack([r["masked_loss"] for r in results]).mean(), masked)
    assert masked < expected.detach()
