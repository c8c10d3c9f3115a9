"""TorchScript export of the encoder with `monai.bundle ckpt_export` and bundle/configs/inference.yaml.

The TorchScript module must load and compute the same features as the eager backbone it came from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle.scripts import ckpt_export
from monai.data import load_net_with_metadata
from torch import nn

from synclr_monai.networks import build_simclr, save_encoder

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "bundle" / "configs" / "inference.yaml"
META = REPO / "bundle" / "configs" / "metadata.json"


def _trained_like(model: nn.Module) -> nn.Module:
    """Random non-default values in every tensor (BN statistics too), as after training."""
    torch.manual_seed(11)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 0.2 + 0.9 if "running_var" in name else torch.randn_like(t) * 0.05)
    return model.eval()


def test_resnet_encoder_exports_through_the_documented_command(tmp_path):
    source = _trained_like(build_simclr("resnet10", projection_hidden=16, projection_dim=4))
    ckpt = save_encoder(source, tmp_path / "model.pt")
    ts_path = tmp_path / "model.ts"
    # exactly the command of the inference.yaml header, with the backbone override
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
        "--filepath", str(ts_path), "--ckpt_file", str(ckpt), "--config_file", str(CONFIG),
        "--meta_file", str(META), "--backbone", "resnet10", "--input_shape", "[1,3,32,32,32]",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    scripted, meta, _ = load_net_with_metadata(str(ts_path))
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert meta.get("name") == "EM synapse SimCLR encoder"  # the bundle metadata travels with the model
    scripted.eval()
    with torch.no_grad():
        for shape in ((2, 3, 32, 32, 32), (1, 3, 48, 40, 56)):  # scripted: any input size
            x = torch.randn(shape)
            torch.testing.assert_close(scripted(x), source.encode(x), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_swin_encoder_exports_by_tracing(tmp_path):
    source = _trained_like(build_simclr("swin", feature_size=12, projection_hidden=16, projection_dim=4))
    ckpt = save_encoder(source, tmp_path / "model.pt")
    ts_path = tmp_path / "swin.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(ckpt),
        config_file=str(CONFIG),
        meta_file=str(META),
        use_trace=True,
        input_shape=[1, 3, 32, 32, 32],
        backbone="swin",
        backbone_kwargs={"feature_size": 12},
    )
    traced = torch.jit.load(str(ts_path)).eval()
    x = torch.randn(2, 3, 32, 32, 32)  # the traced spatial size, another batch size
    with torch.no_grad():
        torch.testing.assert_close(traced(x), source.encode(x), rtol=1e-4, atol=1e-5)
