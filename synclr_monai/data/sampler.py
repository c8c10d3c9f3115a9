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

import torch
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
        groups: when given, index ``i`` belongs to group ``i % groups`` (the bbox of a
            :class:`~synclr_monai.data.dataset.ContrastiveCubeDataset` index) and every run of ``group_batch``
            consecutive indices of a rank comes from one group: each batch is then cut from one bbox, so the
            negatives share its staining and telling instances apart by the bbox's imaging does not pay.
            None: plain shuffling.
        group_batch: the per-process batch size the runs are cut to (required with ``groups``).

    Raises:
        ValueError: ``groups`` without a positive ``group_batch``, or a non-positive ``groups``.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        groups: int | None = None,
        group_batch: int | None = None,
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
        if groups is not None and (int(groups) < 1 or group_batch is None or int(group_batch) < 1):
            raise ValueError(
                f"ResumableSampler: groups must be >= 1 and group_batch >= 1, got groups={groups}, group_batch={group_batch}"
            )
        self.groups = None if groups is None else int(groups)
        self.group_batch = None if group_batch is None else int(group_batch)

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

    def _grouped_indices(self) -> list[int]:
        """This rank's indices in runs of ``group_batch`` from one group, reproducible from ``(seed, epoch)``.

        Written here because ``DistributedSampler`` interleaves ranks index by index (which would mix the
        groups of a batch) and torch has no group-wise batch sampler that also resumes mid-epoch.
        """
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        buckets: list[list[int]] = [[] for _ in range(self.groups)]
        for i in order:  # one pass; each bucket keeps the shuffled order
            buckets[i % self.groups].append(i)
        full: list[list[int]] = []
        tails: list[list[int]] = []
        for members in buckets:
            for j in range(0, len(members), self.group_batch):
                run = members[j : j + self.group_batch]
                (full if len(run) == self.group_batch else tails).append(run)
        if self.shuffle:
            full = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        # whole runs go to each rank; incomplete runs last, so that they never shift the batch boundaries
        runs = full[self.rank :: self.num_replicas] + tails[self.rank :: self.num_replicas]
        mine = [i for run in runs for i in run]
        while mine and len(mine) < self.num_samples:  # pad as DistributedSampler does (repeat the start)
            mine += mine[: self.num_samples - len(mine)]
        return mine[: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        indices = self._grouped_indices() if self.groups is not None else list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])
