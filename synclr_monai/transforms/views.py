"""Two-view pairing: one cube in, two independently augmented views out (the per-sample MONAI path)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from .config import INPUT_MODES, AugmentConfig
from .functional import apply_view_params, as_float_tensor, check_cube
from .params import TwoViewParams, sample_two_view_params
from .pose import SIDE_MARGIN, canonical_frame, check_pose

__all__ = ["RandTwoViewd"]


class RandTwoViewd(RandomizableTransform, MapTransform):
    """Copy the cube ``data[key]`` into two views and augment them independently.

    Stream A (rotation in a random plane, raw-channel scale-and-shift, raw-channel blur) is drawn
    independently for both views; stream B (crop and resize back, cleft dropout) only for the second.
    The parameters are drawn with :func:`~synclr_monai.transforms.params.sample_two_view_params` from
    ``self.R`` and applied with MONAI's deterministic transforms
    (:func:`~synclr_monai.transforms.functional.apply_view_params`), so that the same parameters can be
    replayed by the batched path or checked by mask-aware sampling before being applied.

    With ``materialize=False`` the views are not computed: the cube stays under ``key`` and the drawn
    parameters are written to ``params_key`` (``{"view1": {...}, "view2": {...}}`` of small arrays, which a
    DataLoader collates), for :class:`~synclr_monai.transforms.batched.BatchedTwoViewAugment` to apply
    on the GPU.

    With the stronger 3-D views the cube is a larger context (edge
    :meth:`AugmentConfig.context_size`) that each view resamples to ``cube_size``. When ``data`` holds
    ``second_key`` (a second crop around the same synapse: the nearby-location positive pairs of
    mask-aware sampling), the second view is made from it instead of from ``data[key]``.

    Args:
        keys: the key of the cube (exactly one).
        config: probabilities and ranges (an :class:`AugmentConfig`, a mapping of its fields, or None
            for the lab defaults).
        view_keys: output keys of the two views.
        params_key: output key of the parameters when ``materialize`` is False.
        materialize: compute the views (True) or only draw their parameters (False).
        delete_source: drop ``data[key]`` once the views are computed.
        allow_missing_keys: don't raise for a missing key.
        cube_size: the views' edge S (None: the cube's edge, which needs views without a context).
        input_mode: the encoder's input (:data:`~.config.INPUT_MODES`) the views are turned into; None
            keeps every channel of the cube.
        second_key: the key of an optional second cube for the second view.
        pose: ``native`` (the views as the synapse lies) or ``canonical`` (each view resampled in the frame of
            the cube's central synapse, :mod:`~synclr_monai.transforms.pose`; the 3-D rotation becomes a turn
            about the cleft normal). The frame is found in the cube's masks here, or given to
            :meth:`randomize` by a sampler that knows the synapse (mask-aware sampling).

    Raises:
        ValueError: more than one key, or an unknown input mode or pose.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        config: AugmentConfig | Mapping[str, Any] | None = None,
        view_keys: tuple[str, str] = ("view1", "view2"),
        params_key: str = "view_params",
        materialize: bool = True,
        delete_source: bool = False,
        allow_missing_keys: bool = False,
        cube_size: int | None = None,
        input_mode: str | None = "channels",
        second_key: str = "image2",
        pose: str = "native",
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if len(self.keys) != 1:
            raise ValueError(f"RandTwoViewd: expected exactly one key, got {self.keys}")
        if len(view_keys) != 2:
            raise ValueError(f"RandTwoViewd: view_keys must name two outputs, got {view_keys}")
        self.config = AugmentConfig.from_any(config)
        self.view_keys = tuple(view_keys)
        self.params_key = params_key
        self.materialize = materialize
        self.delete_source = delete_source
        self.params: TwoViewParams | None = None
        if input_mode is not None and input_mode not in INPUT_MODES:
            raise ValueError(f"RandTwoViewd: input_mode must be one of {INPUT_MODES} or None, got {input_mode!r}")
        self.cube_size = None if cube_size is None else int(cube_size)
        self.input_mode = input_mode
        self.second_key = second_key
        self.pose = check_pose(pose)

    @property
    def context_size(self) -> int | None:
        """Edge of the cube the views are made from (None: any, when ``cube_size`` is not set)."""
        return None if self.cube_size is None else self.config.context_size(self.cube_size, self.pose)

    def randomize(  # type: ignore[override]
        self, cube_size: int, frame: np.ndarray | None = None, frame2: np.ndarray | None = None
    ) -> TwoViewParams:
        """Draw both views' parameters for views of edge ``cube_size``; also kept in ``self.params``.

        Args:
            cube_size: the views' edge S.
            frame: in the canonical pose, the ``[3, 3]`` frame of the synapse (None: the native pose; in the
                canonical pose the identity, a cube without a cleft).
            frame2: the second view's frame when it is cut from a second cube (None: ``frame``).
        """
        frames = frames2 = None
        if self.pose == "canonical":
            frames = (np.eye(3) if frame is None else np.asarray(frame, dtype=np.float64))[None]
            frames2 = None if frame2 is None else np.asarray(frame2, dtype=np.float64)[None]
        self.params = sample_two_view_params(
            self.R, 1, int(cube_size), self.config, self.input_mode or "channels", frames=frames, frames2=frames2
        )
        return self.params

    def frame(self, cube: Any) -> np.ndarray | None:
        """The canonical frame of the synapse at the centre of ``cube`` (None in the native pose)."""
        if self.pose != "canonical":
            return None
        # the masks near the views: half the view's edge and the margin the normal's sign looks into
        reach = None if self.cube_size is None else self.cube_size // 2 + int(np.ceil(SIDE_MARGIN))
        return canonical_frame(cube, self.config.voxel_size, reach)

    def apply(self, d: dict, params: TwoViewParams) -> dict:
        """Write the views (or the parameters) of ``d[key]`` for fixed ``params`` into ``d``.

        Args:
            d: the data dict (modified and returned).
            params: length-1 parameters, e.g. from :meth:`randomize`.

        Returns:
            ``d``.
        """
        key = self.keys[0]
        cube = d[key]
        check_cube(cube, f"RandTwoViewd: data[{key!r}]")
        second = d.get(self.second_key, cube)
        if self.materialize:
            d[self.view_keys[0]] = apply_view_params(cube, params.view1, self.input_mode)
            d[self.view_keys[1]] = apply_view_params(second, params.view2, self.input_mode)
            if self.delete_source:
                del d[key]
                d.pop(self.second_key, None)
        else:
            d[key] = as_float_tensor(cube)
            if self.second_key in d:
                d[self.second_key] = as_float_tensor(second)
            # a length-1 sample's parameters without the batch axis, so collation adds it back
            d[self.params_key] = {v: {n: a[0] for n, a in p.items()} for v, p in params.to_dict().items()}
        return d

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        cube = d[keys[0]]
        second = d.get(self.second_key)
        frame2 = None if second is None else self.frame(second)
        params = self.randomize(self.cube_size or cube.shape[1], self.frame(cube), frame2)
        return self.apply(d, params)
