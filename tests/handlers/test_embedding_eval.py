"""EmbeddingEvalHandler on a tiny Ignite engine."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from synclr_monai.evaluation.metrics import knn_accuracy
from synclr_monai.handlers.embedding_eval import EmbeddingEvalHandler
from synclr_monai.data.synapse_cubes import labelled_cubes_from_dataset


class TinySimCLR(nn.Module):
    """encode = per-channel mean through BN + linear; records the mode it was called in."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.linear = nn.Linear(3, 3)
        self.encode_modes: list[bool] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.encode_modes.append(self.training)
        return self.linear(self.bn(x.mean(dim=(2, 3, 4))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


def _labelled(n_per_class: int = 6, s: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    cubes = rng.normal(scale=0.3, size=(2 * n_per_class, 3, s, s, s)).astype(np.float32)
    cubes[:n_per_class, 0] += 1.0
    cubes[n_per_class:, 1] += 1.0
    return cubes, np.repeat(["a", "b"], n_per_class)


def _trainer(network: nn.Module) -> Engine:
    inner = network.module if isinstance(network, nn.DataParallel) else network

    def step(engine, batch):
        # one "training" update so that the encoder changes between evaluations
        network.train()
        with torch.no_grad():
            inner.linear.weight.mul_(1.1)
        return 0.0

    engine = Engine(step)
    engine.network = network
    return engine


def test_metric_written_at_interval_and_train_mode_restored(caplog):
    torch.manual_seed(0)
    network = TinySimCLR()
    cubes, labels = _labelled()
    engine = _trainer(network)
    handler = EmbeddingEvalHandler(cubes, labels, interval_epochs=2, k=3, batch_size=5)
    handler.attach(engine)
    seen: dict[int, float | None] = {}
    expected: dict[int, float] = {}

    @engine.on(Events.EPOCH_COMPLETED)
    def record(e):  # runs after the handler (registered later)
        assert network.training  # the handler left the network in train mode
        seen[e.state.epoch] = e.state.metrics.get("knn_accuracy")
        network.eval()
        with torch.no_grad():
            feats = network.encode(torch.from_numpy(cubes)).numpy()
        network.encode_modes.pop()
        network.train()
        expected[e.state.epoch] = knn_accuracy(feats, labels, k=3).mean

    with caplog.at_level(logging.INFO, logger="synclr_monai.handlers.embedding_eval"):
        engine.run([0, 1], max_epochs=5)
    assert seen[1] is None
    assert seen[2] == pytest.approx(expected[2]) and seen[4] == pytest.approx(expected[4])
    assert seen[3] == seen[2] and seen[5] == seen[4]  # metrics keep the last value in between
    assert seen[4] == 1.0  # the two classes differ in channel means: separable
    # 12 cubes in batches of 5: three encode calls per evaluation (epochs 2 and 4, and the final one), all in
    # eval mode
    assert network.encode_modes == [False] * 9
    assert network.training
    assert sum("knn_accuracy" in r.getMessage() for r in caplog.records) == 2
    assert engine.state.metrics["final/knn_accuracy"] == 1.0
    assert engine.state.metrics["final/linear_probe_accuracy"] == 1.0
    assert sum("final encoder" in r.getMessage() for r in caplog.records) == 1


def test_unwraps_dataparallel_and_custom_encode_fn():
    torch.manual_seed(0)
    network = TinySimCLR()
    cubes, labels = _labelled()
    engine = _trainer(nn.DataParallel(network))
    handler = EmbeddingEvalHandler(cubes, labels, k=3, metric_name="val_knn", exec_at_start=True)
    handler.attach(engine)
    engine.run([0], max_epochs=1)
    assert "val_knn" in engine.state.metrics and len(network.encode_modes) == 2  # at start and epoch 1
    assert network.training

    # a custom encode_fn is used as given; the engine's network is still switched to eval meanwhile
    calls = []

    def encode_fn(x):
        calls.append(network.training)
        return x.flatten(1)[:, :5]

    engine2 = _trainer(network)
    EmbeddingEvalHandler(torch.from_numpy(cubes), labels, k=3, encode_fn=encode_fn).attach(engine2)
    engine2.run([0], max_epochs=1)
    assert calls == [False] and network.training
    feats = cubes.reshape(len(cubes), -1)[:, :5]
    assert engine2.state.metrics["knn_accuracy"] == pytest.approx(knn_accuracy(feats, labels, k=3).mean)


def test_invalid_inputs():
    cubes, labels = _labelled()
    with pytest.raises(ValueError, match="C, S, S, S"):
        EmbeddingEvalHandler(cubes[0], labels)
    with pytest.raises(ValueError, match="labels must be"):
        EmbeddingEvalHandler(cubes, labels[:3])
    with pytest.raises(ValueError, match="two classes"):
        EmbeddingEvalHandler(cubes, np.array(["a"] * 11 + ["b"]))
    engine = Engine(lambda e, b: None)
    handler = EmbeddingEvalHandler(cubes, labels)
    handler.attach(engine)
    with pytest.raises(AttributeError, match="encode_fn"):
        engine.run([0], max_epochs=1)


def test_labelled_cubes_from_synthetic_dataset(tmp_path):
    synthetic = pytest.importorskip("synclr_monai.data.synthetic")
    from synclr_monai.data.bbox import find_bboxes, synapse_cube
    from synclr_monai.data.cache import load_bbox

    data = tmp_path / "data"
    types = synthetic.generate_dataset(data, n_bboxes=1, shape=(32, 48, 48), synapses_per_bbox=4, seed=1)
    subset = types.iloc[[0, 2, 3]]
    subset.to_csv(tmp_path / "labels.csv", index=False)
    cubes, labels = labelled_cubes_from_dataset(data, tmp_path / "labels.csv", cube_size=12)
    assert cubes.shape == (3, 3, 12, 12, 12) and cubes.dtype == np.float32
    assert labels.tolist() == subset["type"].tolist()
    volume = load_bbox(find_bboxes(data)[0])
    row = volume.synapses.set_index("Var1").loc[subset["Var1"].iloc[1]].copy()
    row["Var1"] = subset["Var1"].iloc[1]
    np.testing.assert_array_equal(cubes[1], synapse_cube(volume, row, 12))

    types.iloc[[0]].assign(Var1="ghost_synapse").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="bbox1/ghost_synapse"):
        labelled_cubes_from_dataset(data, tmp_path / "bad.csv", cube_size=12)
