"""Automatic mixed precision settings: the autocast dtype per device and the matching gradient scaler."""

from __future__ import annotations

import warnings

import torch

__all__ = ["AMP_DTYPES", "make_grad_scaler", "resolve_amp_dtype"]

#: names accepted for ``amp_dtype``.
AMP_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_amp_dtype(amp_dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """The autocast dtype to use for ``amp_dtype`` on ``device``.

    float16 needs loss scaling, and PyTorch's gradient scaler is for CUDA; on other devices (CPU) the
    request falls back to bfloat16, whose exponent range needs no scaling, with a warning.

    Args:
        amp_dtype: ``"bfloat16"`` or ``"float16"`` (or the torch dtypes).
        device: the training device.

    Returns:
        ``torch.bfloat16`` or ``torch.float16``.

    Raises:
        ValueError: for any other dtype.
    """
    if isinstance(amp_dtype, torch.dtype):
        dtype = amp_dtype
    elif amp_dtype in AMP_DTYPES:
        dtype = AMP_DTYPES[amp_dtype]
    else:
        dtype = None
    if dtype not in AMP_DTYPES.values():
        raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)}, got {amp_dtype!r}.")
    device_type = torch.device(device).type
    if dtype == torch.float16 and device_type != "cuda":
        warnings.warn(
            f"amp_dtype='float16' needs a CUDA gradient scaler but the device is {device_type!r}; "
            "using bfloat16 autocast instead.",
            stacklevel=2,
        )
        dtype = torch.bfloat16
    return dtype


def make_grad_scaler(amp: bool, dtype: torch.dtype, device: str | torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler when training needs one (float16 autocast on CUDA), else ``None``.

    Args:
        amp: whether mixed precision is on.
        dtype: the autocast dtype from :func:`resolve_amp_dtype`.
        device: the training device.

    Returns:
        a ``torch.amp.GradScaler("cuda")`` or ``None``.
    """
    if amp and dtype == torch.float16 and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
