"""The contrastive dataset: cached bboxes, a random cube and its two views per sample.

The deterministic part of the pipeline (load and assemble a bbox, validate it, find its cleft
components) runs once per bbox inside a MONAI :class:`~monai.data.CacheDataset`. The random part (cut a
cube, uniformly or mask-aware; draw and apply the two views' augmentation) runs per sample.

Randomness: each sample's random stream is derived from ``(seed, epoch, index)`` through
:class:`numpy.random.SeedSequence`, not from a per-worker seed. So a sample does not depend on which
DataLoader worker, which rank (under ``DistributedSampler``) or how many workers produce it; two
workers never draw the same augmentation (they get different indices, hence independent streams); and
a run is reproducible from ``seed`` alone. No ``worker_init_fn`` is needed, and MONAI's default one
(which reseeds the transforms of each worker) is harmless because every sample reseeds them.
Call :meth:`ContrastiveCubeDataset.set_epoch` every epoch, as for ``DistributedSampler``, or every
epoch repeats the previous one's cubes.

Epoch and sampling mode live in a small shared-memory tensor, so that ``set_epoch``/``set_sampling_mode``
called in the main process (by a handler) reach DataLoader workers, persistent ones included. Fallbacks
are not counted here: each sample carries its ``fallback`` flag, which ``FallbackCount`` sums per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, Lambda, Transform

from ..transforms.bbox_check import CheckBBoxd
from ..transforms.config import AugmentConfig
from ..transforms.sampling import CleftComponentsd, MaskAwareCubeSamplerd, RandCubeSamplerd
from ..transforms.views import RandTwoViewd

__all__ = ["ContrastiveCubeDataset", "SAMPLING_MODES", "SYNAPSE_ID_STRIDE"]

#: Sampling modes, in the order of their codes in the shared state.
SAMPLING_MODES = ("random", "mask_aware")
#: a sample's ``synapse`` id is ``bbox * SYNAPSE_ID_STRIDE + cleft component`` (unique over the dataset).
SYNAPSE_ID_STRIDE = 2**32

# shared state layout: [epoch, sampling mode code]
_EPOCH, _MODE = 0, 1


def _is_loaded(item: Mapping) -> bool:
    return "raw" in item and "mask" in item


def _monai_cause(err: BaseException) -> BaseException:
    """The error a transform raised, without MONAI's ``RuntimeError("applying transform ...")`` wrappers."""
    while isinstance(err, RuntimeError) and str(err).startswith("applying transform") and err.__cause__ is not None:
        err = err.__cause__
    return err


class ContrastiveCubeDataset(torch.utils.data.Dataset):
    """Random cubes of cached bboxes with their two augmented views.

    Sample ``i`` cuts a cube of bbox ``i % n_bboxes``, so the length is ``cubes_per_bbox * n_bboxes``
    and a shuffled epoch visits every bbox ``cubes_per_bbox`` times.

    With ``views=True`` a sample is ``{"view1", "view2": [3, S, S, S] float32, "fallback": 0|1,
    "cube_start": [3], "index": int, "synapse": int, "name": str}``; ``"synapse"`` identifies the cleft
    component a mask-aware cube was cut around (``bbox * SYNAPSE_ID_STRIDE + component``; -1 for a uniformly
    random cube), so that the loss can keep two cubes of one synapse out of each other's negatives
    (:class:`~synclr_monai.losses.NTXentLoss` ``mask_same_synapse``). With ``views=False`` (augmentation batched on the
    device by :class:`~synclr_monai.transforms.BatchedTwoViewAugment`) ``"view1"``/``"view2"`` are
    replaced by ``"image"`` (the cube) and ``"view_params"`` (the views' parameters, drawn here so that
    seeds and mask-aware checks hold; pass ``batch["view_params"]`` to the batched augment).

    Args:
        data: bbox items: already loaded (``{"raw": [1, Z, Y, X] float, "mask": [2, Z, Y, X] uint8, "name": str,
            ...}``), or ``{"bbox": BBoxSource}`` items loaded by ``load_transform``.
        load_transform: deterministic callable turning an item into a loaded one; None: items that are
            not loaded get ``LoadBBoxd()``.
        cube_size: the cube edge S.
        cubes_per_bbox: samples per bbox per epoch.
        sampling: ``"random"`` (uniform cube positions) or ``"mask_aware"`` (cubes around cleft components).
        views: compute the views here (True) or leave them to the batched device path (False).
        augment: the augmentation's :class:`~synclr_monai.transforms.AugmentConfig` (or a mapping of its fields).
        min_component_size: cleft components with fewer voxels are ignored by mask-aware sampling.
        min_shared_fraction: fraction of the chosen component's voxels both views must keep.
        max_retries: mask-aware attempts after the first before falling back.
        connectivity: connectivity of the cleft components (6, 18, 26).
        seed: the run's seed (>= 0).
        cache_rate: fraction of bboxes cached (MONAI ``CacheDataset``).
        cache_num_workers: threads that fill the cache.
        progress: show the caching progress bar.
        input_mode: what the encoder sees (:data:`~synclr_monai.transforms.config.INPUT_MODES`): the views
            have 3 channels (``channels``) or 1 (``masked``, ``raw``).
        pair_mode: mask-aware positives from one crop (``same_crop``) or two crops around the same cleft
            component (``nearby``).
        cube_dtype: dtype of ``"image"``/``"image2"`` with ``views=False`` (``"float16"`` or ``"float32"``).
            float16 (default) halves the batches the workers hold and copy to the device: the cubes of the
            3-D views carry context (a 164³ cube of 4 channels for 80³ views, 70 MB in float32), so a batch of
            16 is 1.1 GB per worker in float32. The masks are exact in float16 and the raw channel (z-scored EM)
            keeps ~3 significant digits, far finer than one grey level of 8-bit EM; the device path computes
            in float32.
        pose: ``native`` (views as the synapse lies) or ``canonical`` (each view in the frame of its synapse's
            cleft, :mod:`~synclr_monai.transforms.pose`; the frames are found here, in the workers, and travel
            in the views' parameters to the device path).

    Raises:
        ValueError: empty data, items that are neither loaded nor loadable, bad arguments, and (while
            caching) a malformed bbox or a cube larger than a volume.
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        load_transform: Callable[[Mapping], Mapping] | None = None,
        cube_size: int = 80,
        cubes_per_bbox: int = 64,
        sampling: str = "random",
        views: bool = True,
        augment: AugmentConfig | Mapping[str, Any] | None = None,
        min_component_size: int = 100,
        min_shared_fraction: float = 0.5,
        max_retries: int = 10,
        connectivity: int = 26,
        seed: int = 0,
        cache_rate: float = 1.0,
        cache_num_workers: int | None = 1,
        progress: bool = False,
        input_mode: str = "channels",
        pair_mode: str = "same_crop",
        cube_dtype: str = "float16",
        pose: str = "native",
    ) -> None:
        data = list(data)
        if not data:
            raise ValueError("ContrastiveCubeDataset: no bboxes given")
        bad = [i for i, item in enumerate(data) if not isinstance(item, Mapping)]
        if bad:
            raise ValueError(f"ContrastiveCubeDataset: items {bad} are not mappings")
        if int(cubes_per_bbox) < 1:
            raise ValueError(f"ContrastiveCubeDataset: cubes_per_bbox must be >= 1, got {cubes_per_bbox}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"ContrastiveCubeDataset: seed must be an int >= 0, got {seed!r}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"ContrastiveCubeDataset: sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        if cube_dtype not in ("float16", "float32"):
            raise ValueError(f"ContrastiveCubeDataset: cube_dtype must be 'float16' or 'float32', got {cube_dtype!r}")
        self.cube_dtype = getattr(torch, cube_dtype)
        self.cube_size = int(cube_size)
        self.cubes_per_bbox = int(cubes_per_bbox)
        self.views = bool(views)
        self.seed = int(seed)
        self.augment = AugmentConfig.from_any(augment)

        if load_transform is None and not all(_is_loaded(item) for item in data):
            if not all("bbox" in item or _is_loaded(item) for item in data):
                raise ValueError(
                    "ContrastiveCubeDataset: items must hold 'raw' and 'mask', or 'bbox' with a load_transform"
                )
            from .bbox_loading import LoadBBoxd

            load_transform = LoadBBoxd()
        steps: list[Callable] = []
        if load_transform is not None:
            # CacheDataset caches only up to the first step that is not a deterministic MONAI Transform
            steps.append(load_transform if isinstance(load_transform, Transform) else Lambda(load_transform))
        steps += [
            CheckBBoxd(("raw", "mask"), self.cube_size),
            CleftComponentsd("mask", channel=1, min_size=min_component_size, connectivity=connectivity),
        ]
        # copy_cache=False: the random part only reads the cached volumes, and a deep copy of a
        # 575³ bbox per sample would cost far more than the sample itself
        try:
            self.cache = CacheDataset(
                data,
                transform=Compose(steps),
                cache_rate=cache_rate,
                num_workers=cache_num_workers,
                progress=progress,
                copy_cache=False,
            )
        except RuntimeError as err:
            # surface the bbox's own message (e.g. a cube larger than the volume), not MONAI's wrapper
            cause = _monai_cause(err)
            if cause is err:
                raise
            raise cause from None

        self.input_mode = input_mode
        self.view_transform = RandTwoViewd(
            "image",
            self.augment,
            materialize=self.views,
            delete_source=self.views,
            cube_size=self.cube_size,
            input_mode=input_mode,
            pose=pose,
        )
        self.random_sampler = RandCubeSamplerd(("raw", "mask"), self.cube_size, context=self.view_transform.context_size)
        self.mask_aware_sampler = MaskAwareCubeSamplerd(
            ("raw", "mask"),
            self.cube_size,
            view_transform=self.view_transform,
            min_shared_fraction=min_shared_fraction,
            max_retries=max_retries,
            pair_mode=pair_mode,
        )
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.set_sampling_mode(sampling)

    @property
    def n_bboxes(self) -> int:
        """Number of bboxes."""
        return len(self.cache)

    def __len__(self) -> int:
        return self.cubes_per_bbox * self.n_bboxes

    @property
    def epoch(self) -> int:
        """The epoch the random streams are derived from."""
        return int(self._state[_EPOCH])

    def set_epoch(self, epoch: int) -> None:
        """Derive the samples' random streams from ``epoch`` (call once per epoch, as ``DistributedSampler.set_epoch``).

        Raises:
            ValueError: a negative epoch.
        """
        if int(epoch) < 0:
            raise ValueError(f"set_epoch: epoch must be >= 0, got {epoch}")
        self._state[_EPOCH] = int(epoch)

    @property
    def sampling_mode(self) -> str:
        """``"random"`` or ``"mask_aware"``."""
        return SAMPLING_MODES[int(self._state[_MODE])]

    def set_sampling_mode(self, mode: str) -> None:
        """Switch cube sampling, e.g. to ``"mask_aware"`` from a handler at a given epoch.

        Raises:
            ValueError: an unknown mode.
        """
        if mode not in SAMPLING_MODES:
            raise ValueError(f"set_sampling_mode: mode must be one of {SAMPLING_MODES}, got {mode!r}")
        self._state[_MODE] = SAMPLING_MODES.index(mode)

    def random_state(self, index: int) -> np.random.RandomState:
        """The random stream of sample ``index`` in the current epoch (from ``(seed, epoch, index)``)."""
        return np.random.RandomState(np.random.MT19937(np.random.SeedSequence([self.seed, self.epoch, int(index)])))

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"ContrastiveCubeDataset: index {index} out of range for length {n}")
        index = int(index) % n
        bbox = index % self.n_bboxes
        try:
            item = self.cache[bbox]
        except RuntimeError as err:  # an uncached bbox (cache_rate < 1) loaded now
            cause = _monai_cause(err)
            if cause is err:
                raise
            raise cause from None
        rng = self.random_state(index)
        if self.sampling_mode == "mask_aware":
            self.mask_aware_sampler.set_random_state(state=rng)
            d = self.mask_aware_sampler(item)
        else:
            self.random_sampler.set_random_state(state=rng)
            self.view_transform.set_random_state(state=rng)
            d = self.view_transform(self.random_sampler(item))
        keys = ("view1", "view2") if self.views else ("image", "view_params", "image2")
        out = {k: d[k] for k in keys if k in d}
        for key in ("image", "image2"):
            if key in out:
                out[key] = torch.as_tensor(out[key]).to(self.cube_dtype)
        component = int(d.get("component", -1))
        synapse = bbox * SYNAPSE_ID_STRIDE + component if component >= 0 else -1
        out.update(fallback=int(d["fallback"]), cube_start=d["cube_start"], index=index, synapse=synapse)
        if "name" in d:
            out["name"] = str(d["name"])
        return out
