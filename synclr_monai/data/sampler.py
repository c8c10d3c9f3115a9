"""A shuffling sampler whose order is a function of ``(seed, epoch)`` and that can start mid-epoch, for exact resume.

``DataLoader(shuffle=True)`` draws each epoch's permutation from the global torch generator, whose state
depends on everything the process did before (model initialisation, other draws), so a run resumed from
a checkpoint sees other batches than the uninterrupted run. :class:`ResumableSampler` derives the
permutation from ``seed + epoch`` alone (like ``DistributedSampler``, which it extends, so it also shards
the samples across DDP ranks and MONAI's trainer calls its ``set_epoch`` at every epoch start), and
:meth:`~ResumableSampler.skip_next` makes the next pass start after the samples an interrupted epoch has
already consumed, without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

__all__ = ["ResumableSampler"]


class ResumableSampler(DistributedSampler):
    """Shuffled (or ordered) indices of a dataset, reproducible from ``(seed, epoch)``, resumable mid-epoch.

    Args:
        dataset: the dataset (only its length is used).
        num_replicas: number of processes; default the process group's size, or 1 without one.
        rank: this process's rank; default the process group's rank, or 0.
        shuffle: shuffle with a generator seeded by ``seed + epoch``.
        seed: the run's seed.
        drop_last: drop the tail that does not divide evenly among the processes (see ``DistributedSampler``).
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self._skip = 0

    def skip_next(self, n_samples: int) -> None:
        """Make the next pass (the next ``iter()``) start after its first ``n_samples`` indices of this rank.

        The resumed epoch then feeds the remaining batches exactly as the uninterrupted run would have;
        the pass after it is complete again. ``len()`` stays the full length, so the epoch length does not
        change.

        Args:
            n_samples: indices to skip (batches done x batch size).

        Raises:
            ValueError: a negative count or more than one pass holds.
        """
        if not 0 <= int(n_samples) <= self.num_samples:
            raise ValueError(f"skip_next: n_samples must be in [0, {self.num_samples}], got {n_samples}")
        self._skip = int(n_samples)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])
