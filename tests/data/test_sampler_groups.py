"""ResumableSampler with groups: every batch from one bbox, reproducible, resumable, sharded by whole runs."""

from __future__ import annotations

import pytest

from synclr_monai.data.sampler import ResumableSampler


def _batches(indices, b):
    return [indices[i : i + b] for i in range(0, len(indices), b)]


def test_every_batch_comes_from_one_group_and_every_index_once():
    data = list(range(4 * 16))  # 4 bboxes x 16 cubes: index i is a cube of bbox i % 4
    s = ResumableSampler(data, seed=1, groups=4, group_batch=8, num_replicas=1, rank=0)
    s.set_epoch(2)
    idx = list(iter(s))
    assert sorted(idx) == data
    batches = _batches(idx, 8)
    assert all(len({i % 4 for i in b}) == 1 for b in batches)
    # the groups are interleaved over the epoch, not one bbox after the other
    assert [b[0] % 4 for b in batches] != sorted(b[0] % 4 for b in batches)
    # reproducible from (seed, epoch), different across epochs
    assert list(iter(s)) == idx
    s.set_epoch(3)
    assert list(iter(s)) != idx


def test_resume_skips_whole_batches_of_the_same_order():
    data = list(range(48))
    s = ResumableSampler(data, seed=0, groups=3, group_batch=4, num_replicas=1, rank=0)
    full = list(iter(s))
    s.skip_next(8)
    assert list(iter(s)) == full[8:]


def test_ranks_get_whole_runs_and_together_cover_the_data():
    data = list(range(4 * 16))
    per_rank = [list(iter(ResumableSampler(data, seed=5, groups=4, group_batch=4, num_replicas=2, rank=r))) for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 32
    assert sorted(per_rank[0] + per_rank[1]) == data
    for idx in per_rank:
        assert all(len({i % 4 for i in b}) == 1 for b in _batches(idx, 4))


def test_without_groups_batches_mix_bboxes_and_bad_groups_are_refused():
    idx = list(iter(ResumableSampler(list(range(64)), seed=1, num_replicas=1, rank=0)))
    assert any(len({i % 4 for i in b}) > 1 for b in _batches(idx, 8))
    with pytest.raises(ValueError, match="group_batch"):
        ResumableSampler(list(range(8)), groups=2, num_replicas=1, rank=0)
