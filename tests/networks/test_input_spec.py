"""The encoder's sidecar (model.json) is the truth for its input: encoder_input_spec and run_inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synclr_monai.data.assembly import assemble_bbox
from synclr_monai.data.bbox import find_bboxes, synapse_cube
from synclr_monai.evaluation.embeddings import read_embeddings
from synclr_monai.inference import run_inference
from synclr_monai.networks import build_backbone, build_simclr, load_encoder, save_encoder
from synclr_monai.networks.export import encoder_input_spec, metadata_path

CUBE = 16


def export_masked(tmp_path, **extra):
    """A tiny resnet10 SimCLR trained (here: initialised) on 1-channel ``masked`` cubes, exported with its sidecar."""
    torch.manual_seed(0)
    model = build_simclr("resnet10", in_channels=1, projection_hidden=16, projection_dim=8)
    meta = {"cube_size": CUBE, "input_mode": "masked", "in_channels": 1, "voxel_size": [1.0, 1.0, 1.0], "az_radius": 3}
    meta.update(extra)
    path = tmp_path / "model.pt"
    save_encoder(model, path, metadata=meta)
    return path


def test_spec_reads_the_sidecar(tmp_path):
    path = export_masked(tmp_path)
    spec = encoder_input_spec(path)
    assert spec["backbone"] == "resnet10" and spec["in_channels"] == 1
    assert spec["input_mode"] == "masked" and spec["cube_size"] == CUBE and spec["az_radius"] == 3
    assert "in_channels" not in spec["backbone_kwargs"]
    # values that agree are accepted
    assert encoder_input_spec(path, backbone="resnet10", cube_size=CUBE, input_mode="masked") == spec


@pytest.mark.parametrize(
    "given, key",
    [
        ({"input_mode": "channels"}, "input_mode"),
        ({"input_mode": "raw"}, "input_mode"),
        ({"cube_size": 24}, "cube_size"),
        ({"backbone": "resnet18"}, "backbone"),
        ({"voxel_size": (2.0, 1.0, 1.0)}, "voxel_size"),
    ],
)
def test_spec_contradictions_name_the_sidecar(tmp_path, given, key):
    path = export_masked(tmp_path)
    with pytest.raises(ValueError, match=rf"model\.json.*{key}="):
        encoder_input_spec(path, **given)


def test_spec_inconsistent_or_missing_entries(tmp_path):
    path = export_masked(tmp_path, in_channels=3)  # a sidecar whose channels contradict its mode
    with pytest.raises(ValueError, match=r"model\.json: in_channels 3 does not fit input_mode 'masked'"):
        encoder_input_spec(path)
    side = metadata_path(path)
    meta = json.loads(side.read_text())
    del meta["cube_size"], meta["in_channels"]
    side.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"model\.json: no cube_size recorded"):
        encoder_input_spec(path)
    assert encoder_input_spec(path, cube_size=12)["cube_size"] == 12
    # building the network alone (ckpt_export's network_def) needs no cube size, but always a backbone
    spec = encoder_input_spec(path, required=("backbone",))
    assert spec["cube_size"] is None and spec["backbone"] == "resnet10" and spec["in_channels"] == 1
    # no file and no backbone given: the missing file is the error (no sidecar to read one from)
    with pytest.raises(FileNotFoundError, match=r"encoder file .*elsewhere\.pt does not exist"):
        encoder_input_spec(tmp_path / "elsewhere.pt", required=())
    (tmp_path / "bare.pt").write_bytes(b"")  # a file without a sidecar
    with pytest.raises(ValueError, match=r"no backbone recorded"):
        encoder_input_spec(tmp_path / "bare.pt", required=())
    assert encoder_input_spec(tmp_path / "elsewhere.pt", required=(), backbone="resnet10")["in_channels"] == 3


def test_inference_honours_the_sidecar_input_mode(synthetic_root, tmp_path):
    path = export_masked(tmp_path)
    # input_mode unset; rotations=1: the cube as cut
    h5 = run_inference(synthetic_root, path, tmp_path / "out", batch_size=4, progress=False, rotations=1)
    ids, vectors, attrs = read_embeddings(h5)
    assert attrs["input_mode"] == "masked" and attrs["cube_size"] == CUBE and attrs["backbone"] == "resnet10"
    assert attrs["rotations"] == 1
    assert len(ids) == 6 and np.isfinite(vectors).all()
    # the embeddings are those of the 1-channel masked cubes (the sidecar's az_radius), not of other inputs
    network = build_backbone("resnet10", in_channels=1)
    load_encoder(network, path)
    network.eval()
    vol = assemble_bbox(find_bboxes(synthetic_root)[0])
    row = vol.synapses.iloc[0]
    cube = synapse_cube(vol, row, CUBE, input_mode="masked", az_radius=3)
    assert cube.shape == (1, CUBE, CUBE, CUBE)
    with torch.no_grad():
        expected = network(torch.from_numpy(cube)[None])[0].numpy()
    first = np.flatnonzero((ids["bbox_name"] == vol.name) & (ids["Var1"] == str(row["Var1"])))
    np.testing.assert_allclose(vectors[first[0]], expected, rtol=1e-4, atol=1e-5)
    other = synapse_cube(vol, row, CUBE, input_mode="masked", az_radius=1)
    with torch.no_grad():
        assert not np.allclose(network(torch.from_numpy(other)[None])[0].numpy(), vectors[first[0]], atol=1e-5)


def _all_rot90(cube: np.ndarray) -> list[np.ndarray]:
    """The distinct results of composed np.rot90 turns in the three planes (the cube's 24 rotations)."""
    seen: dict[bytes, np.ndarray] = {}
    frontier = [cube]
    while frontier:
        nxt = []
        for c in frontier:
            for axes in ((0, 1), (1, 2), (0, 2)):
                r = np.ascontiguousarray(np.rot90(c, 1, axes))
                if r.tobytes() not in seen:
                    seen[r.tobytes()] = r
                    nxt.append(r)
        frontier = nxt
    return list(seen.values())


def test_inference_averages_features_over_the_24_rotations_by_default(synthetic_root, tmp_path):
    path = export_masked(tmp_path)
    h5 = run_inference(synthetic_root, path, tmp_path / "out", batch_size=4, progress=False)
    ids, vectors, attrs = read_embeddings(h5)
    assert attrs["rotations"] == 24
    network = build_backbone("resnet10", in_channels=1)
    load_encoder(network, path)
    network.eval()
    vol = assemble_bbox(find_bboxes(synthetic_root)[0])
    row = vol.synapses.iloc[0]
    cube = synapse_cube(vol, row, CUBE, input_mode="masked", az_radius=3)[0]
    turns = _all_rot90(cube)
    assert len(turns) == 24
    with torch.no_grad():
        expected = np.mean([network(torch.from_numpy(t)[None, None])[0].numpy() for t in turns], axis=0)
    first = np.flatnonzero((ids["bbox_name"] == vol.name) & (ids["Var1"] == str(row["Var1"])))
    np.testing.assert_allclose(vectors[first[0]], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("given", [{"input_mode": "channels"}, {"cube_size": 24}])
def test_inference_rejects_a_contradicting_input(synthetic_root, tmp_path, given):
    path = export_masked(tmp_path)
    with pytest.raises(ValueError, match=r"model\.json.*leave it unset"):
        run_inference(synthetic_root, path, tmp_path / "out", progress=False, **given)
    assert not (tmp_path / "out").exists()


def export_stem_stride_1(tmp_path):
    """A tiny resnet10 with stem stride 1 (MONAI ResNet's default; the package's is 2): same weight shapes."""
    torch.manual_seed(0)
    model = build_simclr("resnet10", projection_hidden=16, projection_dim=8, conv1_t_stride=1)
    path = tmp_path / "model.pt"
    save_encoder(model, path, metadata={"cube_size": CUBE, "input_mode": "channels", "in_channels": 3})
    return path


def test_inference_rebuilds_the_encoder_with_the_sidecar_backbone_kwargs(synthetic_root, tmp_path):
    path = export_stem_stride_1(tmp_path)
    h5 = run_inference(synthetic_root, path, tmp_path / "out", batch_size=4, progress=False, rotations=1)
    ids, vectors, attrs = read_embeddings(h5)
    vol = assemble_bbox(find_bboxes(synthetic_root)[0])
    row = vol.synapses.iloc[0]
    cube = torch.from_numpy(synapse_cube(vol, row, CUBE, input_mode="channels"))[None]
    first = np.flatnonzero((ids["bbox_name"] == vol.name) & (ids["Var1"] == str(row["Var1"])))[0]
    features = {}
    for stride in (1, 2):  # the file loads strictly into either stem: only the sidecar tells them apart
        network = build_backbone("resnet10", conv1_t_stride=stride)
        load_encoder(network, path)
        with torch.no_grad():
            features[stride] = network.eval()(cube)[0].numpy()
    np.testing.assert_allclose(vectors[first], features[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(vectors[first], features[2], atol=1e-3)
    with pytest.raises(ValueError, match=r"model\.json: the encoder was trained with backbone_kwargs .*conv1_t_stride"):
        run_inference(synthetic_root, path, tmp_path / "out2", progress=False, backbone_kwargs={"conv1_t_stride": 2})


def test_torchscript_network_def_takes_the_sidecar_backbone_kwargs(tmp_path):
    from monai.bundle import ConfigParser

    path = export_stem_stride_1(tmp_path)
    config = Path(__file__).resolve().parents[2] / "bundle" / "configs" / "inference.yaml"
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update({"encoder_path": str(path)})
    network = parser.get_parsed_content("network_def")  # what `monai.bundle ckpt_export network_def` builds
    assert tuple(network.conv1.stride) == (1, 1, 1)
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update({"encoder_path": str(path), "backbone_kwargs": {"conv1_t_stride": 2}})
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("network_def")
    chain = [info.value, info.value.__cause__, info.value.__context__]
    assert any("model.json" in str(e) and "conv1_t_stride" in str(e) for e in chain if e is not None)


def test_finetune_takes_the_sidecar_backbone_kwargs_and_input_channels(tmp_path):
    from synclr_monai.networks.segmentation import segmentation_backbone

    path = export_stem_stride_1(tmp_path)
    name, kwargs = segmentation_backbone(path)
    assert name == "resnet10" and kwargs["conv1_t_stride"] == 1 and "in_channels" not in kwargs
    # a stride that contradicts model.json would load strictly and give other features: refused
    with pytest.raises(ValueError, match=r"model\.json: the encoder was trained with backbone_kwargs"):
        segmentation_backbone(path, backbone_kwargs={"conv1_t_stride": 2})
    assert segmentation_backbone(path, backbone_kwargs={"conv1_t_stride": 1}) == (name, kwargs)
    # a one-channel (masked) export: its channel count comes from model.json too
    (tmp_path / "masked").mkdir()
    masked = export_masked(tmp_path / "masked")
    assert segmentation_backbone(masked, in_channels=1)[0] == "resnet10"
    with pytest.raises(ValueError, match=r"model\.json: the encoder was trained on 1 input channels"):
        segmentation_backbone(masked, in_channels=3)


def test_inference_honours_the_sidecar_canonical_pose(synthetic_root, tmp_path):
    path = export_masked(tmp_path, pose="canonical")
    assert encoder_input_spec(path)["pose"] == "canonical"
    assert encoder_input_spec(export_masked(tmp_path / "old"))["pose"] == "native"  # a sidecar from before poses
    with pytest.raises(ValueError, match=r"model\.json: the encoder was trained with pose='canonical'"):
        run_inference(synthetic_root, path, tmp_path / "bad", progress=False, pose="native")
    h5 = run_inference(synthetic_root, path, tmp_path / "out", batch_size=4, progress=False)
    ids, vectors, attrs = read_embeddings(h5)
    assert attrs["pose"] == "canonical" and attrs["rotations"] == 4  # the turns about the normal, by default
    network = build_backbone("resnet10", in_channels=1)
    load_encoder(network, path)
    network.eval()
    vol = assemble_bbox(find_bboxes(synthetic_root)[0])
    row = vol.synapses.iloc[0]
    cube = torch.from_numpy(synapse_cube(vol, row, CUBE, input_mode="masked", az_radius=3, pose="canonical"))[None]
    native = synapse_cube(vol, row, CUBE, input_mode="masked", az_radius=3)
    assert cube.shape == (1, 1, CUBE, CUBE, CUBE) and not np.allclose(cube[0].numpy(), native)
    with torch.no_grad():
        expected = np.mean([network(torch.rot90(cube, k, dims=(3, 4)))[0].numpy() for k in range(4)], axis=0)
    first = np.flatnonzero((ids["bbox_name"] == vol.name) & (ids["Var1"] == str(row["Var1"])))
    np.testing.assert_allclose(vectors[first[0]], expected, rtol=1e-4, atol=1e-5)
    bad = export_masked(tmp_path / "bad_pose", pose="upright")
    with pytest.raises(ValueError, match=r"model\.json: pose must be one of"):
        encoder_input_spec(bad)
