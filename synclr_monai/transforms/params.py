"""The random parameters of the two views, drawn once and applied by either path.

Both the per-sample MONAI path (:class:`~synclr_monai.transforms.views.RandTwoViewd`) and the batched
torch path (:class:`~synclr_monai.transforms.batched.BatchedTwoViewAugment`) take their randomness from
:func:`sample_two_view_params`. Keeping the draw separate from the application is what lets the two
paths be compared voxel for voxel, lets mask-aware sampling test a candidate augmentation before it is
applied, and lets CPU workers draw the parameters of an augmentation that the GPU applies later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ROTATION_PLANES, AugmentConfig, is_anisotropic

__all__ = [
    "ViewParams",
    "TwoViewParams",
    "random_rotations",
    "sample_view_params",
    "sample_two_view_params",
    "view_matrices",
]


def _as_numpy(value: Any) -> np.ndarray:
    # collated batches hold torch tensors; the parameters are tiny, so a host copy costs nothing
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


#: The stronger views' fields: name, dtype, per-cube shape, identity value.
_EXTRA_FIELDS: tuple[tuple[str, type, tuple[int, ...], Any], ...] = (
    ("affine", np.float64, (3, 3), np.eye(3)),
    ("offset", np.float64, (3,), 0.0),
    ("gamma", np.float64, (), 1.0),
    ("noise_std", np.float64, (), 0.0),
    ("mult_noise_std", np.float64, (), 0.0),
    ("noise_seed", np.int64, (), 0),
    ("section_std", np.float64, (), 0.0),
    ("blackout", np.int64, (), 0),
    ("misalign", np.int64, (2,), 0),
    ("section_seed", np.int64, (), 0),
    ("cutout_start", np.int64, (3,), 0),
    ("cutout_size", np.int64, (3,), 0),
    ("morph", np.int64, (3,), 0),
    ("pre_dropout", bool, (), False),
    ("az_radius", np.int64, (), 0),
    ("resample", bool, (), False),
)


@dataclass
class ViewParams:
    """The random parameters of one view for ``n`` cubes (each field's first axis is the cube).

    A parameter whose step is not applied holds the identity: ``rot_k`` 0, ``scale`` 1, ``shift`` 0,
    ``blur`` False, ``crop_size`` S with ``crop_start`` 0, ``dropout`` False.

    Args:
        rot_plane: ``[n]`` int, index into :data:`~synclr_monai.transforms.config.ROTATION_PLANES`.
        rot_k: ``[n]`` int in 0..3, number of quarter turns.
        scale: ``[n]`` float, raw-channel intensity scale.
        shift: ``[n]`` float, raw-channel intensity shift.
        blur: ``[n]`` bool, whether to blur the raw channel.
        sigma: ``[n, 3]`` float, blur sigma per spatial axis (z, y, x) in voxels.
        crop_start: ``[n, 3]`` int, first voxel of the crop.
        crop_size: ``[n, 3]`` int, edge of the crop (S: no crop).
        dropout: ``[n]`` bool, whether to zero the cleft mask.

    The stronger views' parameters (each defaults to the identity, so a legacy view needs none of them):

    Args:
        affine: ``[n, 3, 3]`` linear map from the view's centred voxel coordinates to the context's
            (``(z, y, x)`` order; identity: no resample).
        offset: ``[n, 3]`` translation in context voxels.
        gamma: ``[n]`` gamma of the raw contrast (1: none).
        noise_std: ``[n]`` additive Gaussian noise sigma (0: none).
        mult_noise_std: ``[n]`` multiplicative log-normal noise sigma (0: none).
        noise_seed: ``[n]`` seed of the noise fields (a ``torch.Generator`` on the CPU).
        section_std: ``[n]`` per-section intensity jitter sigma (0: none).
        blackout: ``[n]`` number of blacked-out sections.
        misalign: ``[n, 2]`` in-plane (y, x) shift of the misaligned sections (0: none).
        section_seed: ``[n]`` seed of the per-section draws (jitter values, blacked-out sections, the
            first misaligned section).
        cutout_start: ``[n, 3]`` first voxel of the cutout box.
        cutout_size: ``[n, 3]`` edge of the box (0: no cutout).
        morph: ``[n, 3]`` per mask channel (pre, cleft, post) a dilation (> 0) or erosion (< 0) radius.
        pre_dropout: ``[n]`` bool, whether to zero the pre-synaptic mask.
        az_radius: ``[n]`` dilation radius of the synapse mask in the ``masked`` input mode.
        resample: ``[n]`` bool, the cube is a context that the view is resampled from (``affine``,
            ``offset``) even where they are the identity (then the view is the context's centre S-cube).
    """

    rot_plane: np.ndarray
    rot_k: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    blur: np.ndarray
    sigma: np.ndarray
    crop_start: np.ndarray
    crop_size: np.ndarray
    dropout: np.ndarray
    affine: np.ndarray | None = None
    offset: np.ndarray | None = None
    gamma: np.ndarray | None = None
    noise_std: np.ndarray | None = None
    mult_noise_std: np.ndarray | None = None
    noise_seed: np.ndarray | None = None
    section_std: np.ndarray | None = None
    blackout: np.ndarray | None = None
    misalign: np.ndarray | None = None
    section_seed: np.ndarray | None = None
    cutout_start: np.ndarray | None = None
    cutout_size: np.ndarray | None = None
    morph: np.ndarray | None = None
    pre_dropout: np.ndarray | None = None
    az_radius: np.ndarray | None = None
    resample: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.rot_plane = _as_numpy(self.rot_plane).astype(np.int64).reshape(-1)
        self.rot_k = _as_numpy(self.rot_k).astype(np.int64).reshape(-1)
        self.scale = _as_numpy(self.scale).astype(np.float64).reshape(-1)
        self.shift = _as_numpy(self.shift).astype(np.float64).reshape(-1)
        self.blur = _as_numpy(self.blur).astype(bool).reshape(-1)
        self.sigma = _as_numpy(self.sigma).astype(np.float64).reshape(-1, 3)
        self.crop_start = _as_numpy(self.crop_start).astype(np.int64).reshape(-1, 3)
        self.crop_size = _as_numpy(self.crop_size).astype(np.int64).reshape(-1, 3)
        self.dropout = _as_numpy(self.dropout).astype(bool).reshape(-1)
        n = len(self.rot_k)
        for name, dtype, shape, identity in _EXTRA_FIELDS:
            value = getattr(self, name)
            if value is None:
                value = np.broadcast_to(np.asarray(identity, dtype=dtype), (n, *shape)).copy()
            setattr(self, name, _as_numpy(value).astype(dtype).reshape(-1, *shape))
        lengths = {f.name: len(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if any(v != n for v in lengths.values()):
            raise ValueError(f"ViewParams: all fields must have the same length, got {lengths}")
        if np.any((self.rot_plane < 0) | (self.rot_plane >= len(ROTATION_PLANES))):
            raise ValueError(f"ViewParams.rot_plane must be in 0..{len(ROTATION_PLANES) - 1}, got {self.rot_plane}")
        if np.any(self.crop_size < 1) or np.any(self.crop_start < 0):
            raise ValueError("ViewParams: crop_size must be >= 1 and crop_start >= 0")
        if np.any(self.sigma[self.blur] <= 0):
            raise ValueError("ViewParams: a blurred cube needs sigma > 0")

    def __len__(self) -> int:
        return len(self.rot_k)

    @property
    def resampled(self) -> np.ndarray:
        """``[n]`` bool: views made by one affine resample of a context cube.

        Every view drawn with a context is one (``resample``), even where its draw is the identity map
        (no rotation, flip, zoom or shift): its output is then the context's centre S-cube, not the context.
        """
        return self.resample | np.any(self.affine != np.eye(3), axis=(1, 2)) | np.any(self.offset != 0, axis=1)

    def select(self, index: int | slice | Sequence[int] | np.ndarray) -> ViewParams:
        """The parameters of a subset of the cubes (an int keeps a length-1 view).

        Args:
            index: an int, slice, index list or boolean mask over the cubes.

        Returns:
            A new ``ViewParams``.
        """
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return ViewParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def to_dict(self) -> dict[str, np.ndarray]:
        """The fields as a dict of arrays (collatable by a DataLoader)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViewParams:
        """Rebuild from :meth:`to_dict` output, or from its collated form (tensors ``[B, ...]``).

        Args:
            data: mapping with every field name.

        Returns:
            The parameters.

        Raises:
            KeyError: a field is missing.
        """
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data]
        if missing:
            raise KeyError(f"ViewParams.from_dict: missing fields {missing}")
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    @classmethod
    def concat(cls, parts: Sequence[ViewParams]) -> ViewParams:
        """Concatenate the parameters of several groups of cubes."""
        if not parts:
            raise ValueError("ViewParams.concat needs at least one part")
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})

    def check_cube_size(self, cube_size: int) -> None:
        """Raise ValueError if a crop of these parameters does not fit in a cube of edge ``cube_size``."""
        if np.any(self.crop_start + self.crop_size > cube_size):
            raise ValueError(
                f"ViewParams: crops {self.crop_start.tolist()} + {self.crop_size.tolist()} exceed a {cube_size}³ cube"
            )


@dataclass
class TwoViewParams:
    """The parameters of both views of ``n`` cubes.

    Args:
        view1: stream A only (no crop, no dropout).
        view2: stream A and stream B.
    """

    view1: ViewParams
    view2: ViewParams

    def __post_init__(self) -> None:
        if len(self.view1) != len(self.view2):
            raise ValueError(f"TwoViewParams: views of different lengths {len(self.view1)} and {len(self.view2)}")

    def __len__(self) -> int:
        return len(self.view1)

    def select(self, index: int | slice | Sequence[int] | np.ndarray) -> TwoViewParams:
        """Both views' parameters of a subset of the cubes."""
        return TwoViewParams(self.view1.select(index), self.view2.select(index))

    def to_dict(self) -> dict[str, dict[str, np.ndarray]]:
        """``{"view1": {...}, "view2": {...}}`` of arrays, collatable by a DataLoader."""
        return {"view1": self.view1.to_dict(), "view2": self.view2.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> TwoViewParams:
        """Rebuild from :meth:`to_dict` output or its collated form (a batch's ``"view_params"``)."""
        return cls(ViewParams.from_dict(data["view1"]), ViewParams.from_dict(data["view2"]))

    @classmethod
    def concat(cls, parts: Sequence[TwoViewParams]) -> TwoViewParams:
        """Concatenate the parameters of several groups of cubes."""
        return cls(ViewParams.concat([p.view1 for p in parts]), ViewParams.concat([p.view2 for p in parts]))


def sample_view_params(
    rng: np.random.RandomState,
    n: int,
    cube_size: int,
    config: AugmentConfig | None = None,
    second_view: bool = False,
    frames: np.ndarray | None = None,
) -> ViewParams:
    """Draw one view's parameters for ``n`` cubes.

    Args:
        rng: the random stream (a MONAI transform's ``self.R``).
        n: number of cubes.
        cube_size: the cube edge S (bounds the crop).
        config: probabilities and ranges; None for the lab defaults.
        second_view: also draw stream B (crop-and-resize, mask dropout); otherwise those are identity.
        frames: ``[n, 3, 3]`` canonical frames of the cubes' synapses (rows: the new axes in physical
            coordinates, :func:`~synclr_monai.transforms.pose.canonical_frame`), or None for the native pose.
            Given, every view is resampled in its synapse's frame: the 3-D rotation (``rotate3d_prob``) becomes
            a uniform turn about the cleft normal, and the normal is never flipped (it would swap the
            pre- and post-synaptic sides); the 90° turns and the crop-and-resize are not used.

    Returns:
        The parameters.

    Raises:
        ValueError: ``n`` < 0, ``cube_size`` < 1, or frames of the wrong shape.
    """
    if n < 0 or cube_size < 1:
        raise ValueError(f"sample_view_params: need n >= 0 and cube_size >= 1, got n={n}, cube_size={cube_size}")
    if frames is not None:
        frames = np.asarray(frames, dtype=np.float64)
        if frames.shape != (n, 3, 3):
            raise ValueError(f"sample_view_params: frames must be [n, 3, 3] = [{n}, 3, 3], got {frames.shape}")
    cfg = config or AugmentConfig()
    context = cfg.uses_context or frames is not None
    rotate = rng.random_sample(n) < (0.0 if context else cfg.rotate_prob)
    rot_plane = rng.randint(0, len(ROTATION_PLANES), size=n)
    rot_k = np.where(rotate, rng.randint(0, cfg.rotate_max_k + 1, size=n), 0)

    jitter = rng.random_sample(n) < cfg.intensity_prob
    scale = np.where(jitter, rng.normal(cfg.scale_mean, cfg.scale_std, size=n), 1.0)
    shift = np.where(jitter, rng.normal(0.0, cfg.shift_std, size=n), 0.0)

    blur = rng.random_sample(n) < cfg.blur_prob
    # one isotropic sigma per cube, as the lab blurred; the per-axis layout keeps anisotropic blur possible
    sigma = np.repeat(rng.uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], size=n)[:, None], 3, axis=1)

    crop_size = np.full((n, 3), cube_size, dtype=np.int64)
    crop_start = np.zeros((n, 3), dtype=np.int64)
    dropout = np.zeros(n, dtype=bool)
    if second_view:
        crop = rng.random_sample(n) < (0.0 if context else cfg.crop_prob)
        lo, hi = cfg.crop_sizes(cube_size)
        # one edge for all axes: a cubic crop resized back to the cube scales all axes alike
        edge = np.where(crop, rng.randint(lo, hi + 1, size=n), cube_size)
        crop_size = np.repeat(edge[:, None], 3, axis=1)
        # uniform start in 0..S-edge per axis (what MONAI's RandSpatialCrop draws)
        crop_start = np.floor(rng.random_sample((n, 3)) * (cube_size - crop_size + 1)).astype(np.int64)
        dropout = rng.random_sample(n) < cfg.mask_dropout_prob
    strong = _any_strong_view(cfg) or frames is not None
    extra = _sample_strong_views(rng, n, cube_size, cfg, second_view, frames) if strong else {}
    return ViewParams(rot_plane, rot_k, scale, shift, blur, sigma, crop_start, crop_size, dropout, **extra)


def _any_strong_view(cfg: AugmentConfig) -> bool:
    probs = (
        cfg.noise_prob, cfg.mult_noise_prob, cfg.gamma_prob, cfg.section_prob, cfg.blackout_rate,
        cfg.misalign_prob, cfg.cutout_prob, cfg.mask_morph_prob, cfg.pre_dropout_prob,
    )  # fmt: skip
    return cfg.uses_context or any(p > 0 for p in probs) or is_anisotropic(cfg.voxel_size)


def random_rotations(rng: np.random.RandomState, n: int) -> np.ndarray:
    """``n`` rotation matrices drawn uniformly from SO(3) (normalised Gaussian quaternions).

    Returns:
        ``[n, 3, 3]`` float64.
    """
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def view_matrices(
    rotation: np.ndarray, flips: np.ndarray, zoom: np.ndarray, voxel_size: tuple[float, float, float]
) -> np.ndarray:
    """The views' linear maps from output voxel offsets to context voxel offsets, ``(z, y, x)`` order.

    An output voxel is a cube of the finest voxel size; its physical offset is flipped, shrunk by the
    zoom, rotated, and expressed in the context's (possibly anisotropic) voxels:
    ``A = D^-1 R F (d_min / zoom)`` with ``D = diag(voxel_size)``.

    Args:
        rotation: ``[n, 3, 3]`` rotations (physical space).
        flips: ``[n, 3]`` bool, axes to flip.
        zoom: ``[n]`` isotropic zoom (> 1 magnifies).
        voxel_size: ``(z, y, x)`` voxel size.

    Returns:
        ``[n, 3, 3]`` float64.
    """
    voxel = np.asarray(voxel_size, dtype=np.float64)
    signs = np.where(np.asarray(flips, dtype=bool), -1.0, 1.0)
    scale = voxel.min() / np.asarray(zoom, dtype=np.float64)
    return (rotation * signs[:, None, :]) * scale[:, None, None] / voxel[None, :, None]


def _sample_strong_views(
    rng: np.random.RandomState,
    n: int,
    cube_size: int,
    cfg: AugmentConfig,
    second_view: bool,
    frames: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The stronger views' parameters (see :class:`ViewParams`), each drawn only when its probability is on."""
    out: dict[str, np.ndarray] = {}
    voxel = np.asarray(cfg.voxel_size, dtype=np.float64)
    if cfg.uses_context or is_anisotropic(cfg.voxel_size) or frames is not None:
        rotate = rng.random_sample(n) < cfg.rotate3d_prob
        if frames is None:
            rotation = np.where(rotate[:, None, None], random_rotations(rng, n), np.eye(3))
        else:
            from .pose import turns_about_normal

            # output offsets are in the synapse's frame: turned about its normal, then into physical space
            angle = np.where(rotate, rng.uniform(0.0, 2.0 * np.pi, size=n), 0.0)
            rotation = np.transpose(frames, (0, 2, 1)) @ turns_about_normal(n, angle)
        flips = rng.random_sample((n, 3)) < cfg.flip_prob
        if frames is not None:
            flips[:, 0] = False  # flipping the normal would swap the pre- and post-synaptic sides
        zoom = rng.uniform(cfg.zoom_range[0], cfg.zoom_range[1], size=n)
        out["affine"] = view_matrices(rotation, flips, zoom, cfg.voxel_size)
        reach = cfg.translate_fraction * cube_size * voxel.min() / voxel
        out["offset"] = rng.uniform(-1.0, 1.0, size=(n, 3)) * reach
        # the cube is a context (or anisotropic): resample it even where this draw is the identity
        out["resample"] = np.ones(n, dtype=bool)
    if cfg.gamma_prob > 0:
        out["gamma"] = np.where(rng.random_sample(n) < cfg.gamma_prob, rng.uniform(*cfg.gamma_range, size=n), 1.0)
    if cfg.noise_prob > 0 or cfg.mult_noise_prob > 0:
        out["noise_std"] = np.where(rng.random_sample(n) < cfg.noise_prob, rng.uniform(*cfg.noise_std, size=n), 0.0)
        mult = rng.random_sample(n) < cfg.mult_noise_prob
        out["mult_noise_std"] = np.where(mult, rng.uniform(*cfg.mult_noise_std, size=n), 0.0)
        out["noise_seed"] = rng.randint(0, 2**31 - 1, size=n)
    if cfg.section_prob > 0 or cfg.blackout_rate > 0 or cfg.misalign_prob > 0:
        out["section_std"] = np.where(rng.random_sample(n) < cfg.section_prob, cfg.section_std, 0.0)
        out["blackout"] = rng.poisson(cfg.blackout_rate, size=n) if cfg.blackout_rate > 0 else np.zeros(n, np.int64)
        misalign = rng.random_sample(n) < cfg.misalign_prob
        shift = rng.randint(-cfg.misalign_max, cfg.misalign_max + 1, size=(n, 2))
        out["misalign"] = np.where(misalign[:, None], shift, 0)
        out["section_seed"] = rng.randint(0, 2**31 - 1, size=n)
    if cfg.cutout_prob > 0:
        cut = rng.random_sample(n) < cfg.cutout_prob
        edge = np.round(rng.uniform(*cfg.cutout_size, size=(n, 3)) * cube_size).astype(np.int64)
        edge = np.clip(edge, 1, cube_size // 2)
        edge = np.clip(edge, 1, max(cube_size // 2 - 1, 1))
        start = np.floor(rng.random_sample((n, 3)) * (cube_size - edge + 1)).astype(np.int64)
        # keep the centre voxel c: along one random axis the box lies wholly before c or wholly after it
        rows, axis = np.arange(n), rng.randint(0, 3, size=n)
        c, e = cube_size // 2, edge[rows, axis]
        before = np.floor(rng.random_sample(n) * np.maximum(c - e + 1, 1)).astype(np.int64)
        after = c + 1 + np.floor(rng.random_sample(n) * np.maximum(cube_size - e - c, 1)).astype(np.int64)
        start[rows, axis] = np.clip(np.where(rng.random_sample(n) < 0.5, before, after), 0, cube_size - e)
        out["cutout_start"] = start
        out["cutout_size"] = np.where(cut[:, None], edge, 0)
    if cfg.mask_morph_prob > 0 and cfg.mask_morph_radius > 0:
        morph = rng.random_sample((n, 3)) < cfg.mask_morph_prob
        radius = rng.randint(1, cfg.mask_morph_radius + 1, size=(n, 3)) * np.where(rng.random_sample((n, 3)) < 0.5, -1, 1)
        out["morph"] = np.where(morph, radius, 0)
    if cfg.pre_dropout_prob > 0 and second_view:
        out["pre_dropout"] = rng.random_sample(n) < cfg.pre_dropout_prob
    return out


def sample_two_view_params(
    rng: np.random.RandomState,
    n: int,
    cube_size: int,
    config: AugmentConfig | None = None,
    input_mode: str = "channels",
    frames: np.ndarray | None = None,
    frames2: np.ndarray | None = None,
) -> TwoViewParams:
    """Draw both views' parameters for ``n`` cubes (view 1: stream A; view 2: streams A and B).

    Args:
        rng: the random stream.
        n: number of cubes.
        cube_size: the cube edge S.
        config: probabilities and ranges; None for the lab defaults.
        input_mode: the encoder's input mode; ``"masked"`` also draws each view's synapse-mask dilation
            radius (last, so the other draws do not depend on the mode).
        frames: ``[n, 3, 3]`` the synapses' canonical frames (the canonical pose; see
            :func:`sample_view_params`), or None for the native pose.
        frames2: the second view's frames when it is cut from another cube (None: ``frames``).

    Returns:
        The parameters.
    """
    cfg = config or AugmentConfig()
    view1 = sample_view_params(rng, n, cube_size, cfg, second_view=False, frames=frames)
    view2 = sample_view_params(rng, n, cube_size, cfg, second_view=True, frames=frames if frames2 is None else frames2)
    if input_mode == "masked":
        lo, hi = cfg.active_zone_radius
        view1.az_radius = rng.randint(lo, hi + 1, size=n).astype(np.int64)
        view2.az_radius = rng.randint(lo, hi + 1, size=n).astype(np.int64)
    return TwoViewParams(view1, view2)
