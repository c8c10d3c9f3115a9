"""EncoderExportHandler: the encoder is exported at the end of training, on rank 0 only."""

from __future__ import annotations

import ignite.distributed as idist
import torch
from monai.networks.nets import resnet10
from toy_training import make_trainer

from synclr_monai.handlers import EncoderExportHandler
from synclr_monai.networks import build_simclr, load_encoder, read_encoder_metadata
from synclr_monai.networks.export import encoder_state_dict


def small_simclr():
    torch.manual_seed(0)
    return build_simclr("resnet10", projection_hidden=16, projection_dim=8)


def test_exports_trained_encoder_loadable_into_monai_resnet(tmp_path):
    network = small_simclr()
    trainer = make_trainer(network=network, loader=[{"view1": torch.randn(2, 3, 16, 16, 16),
                                                     "view2": torch.randn(2, 3, 16, 16, 16)}])
    path = tmp_path / "bundle" / "models" / "model.pt"
    handler = EncoderExportHandler(path, metadata={"backbone": "resnet10"})
    handler.attach(trainer)
    trainer.run()

    assert handler.exported == path and path.is_file()
    state = torch.load(path, weights_only=True)
    trained = encoder_state_dict(network)  # the weights after training
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[k], trained[k]) for k in state)
    assert not torch.equal(state["conv1.weight"], encoder_state_dict(small_simclr())["conv1.weight"])
    metadata = read_encoder_metadata(path)
    assert metadata["iteration"] == 1 and metadata["epoch"] == 1 and metadata["backbone"] == "resnet10"
    target = resnet10(spatial_dims=3, n_input_channels=3)
    load_encoder(target, path)
    torch.testing.assert_close(target.conv1.weight, state["conv1.weight"])


def test_not_exported_on_other_ranks(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    trainer = make_trainer()
    EncoderExportHandler(tmp_path / "model.pt", save_fn=lambda *a, **k: calls.append(a)).attach(trainer)
    trainer.run()
    assert calls == [] and not (tmp_path / "model.pt").exists()
