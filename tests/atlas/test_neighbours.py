"""Nearest-synapse search: exact, dataset-wide, with a known answer (a duplicated synapse)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synclr_monai.atlas.common import AtlasInputError, load_atlas, parse_synapse_id, read_query_ids
from synclr_monai.atlas.neighbours import cosine_knn, find_neighbours, main


def test_cosine_knn_matches_brute_force_whatever_the_block():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :7]
    for block in (1, 37, 1000):
        idx, sim = cosine_knn(x, 7, block_size=block)
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_allclose(sim, np.take_along_axis(sims, expected, 1), atol=1e-5)
    idx, _ = cosine_knn(x, 3, queries=np.array([5]), exclude_self=False)
    assert idx[0, 0] == 5
    with pytest.raises(ValueError, match="k must be"):
        cosine_knn(x, 0)


@pytest.mark.parametrize("form", ["{b}:{v}", "{b}_{v}", "{b}/{v}"])
def test_id_forms(form):
    assert parse_synapse_id(form.format(b="bbox12", v="non_spine_synapse_001")) == ("bbox12", "non_spine_synapse_001")


def test_bad_id_form_is_named():
    with pytest.raises(AtlasInputError, match="'synapse_001' is not of the form"):
        parse_synapse_id("synapse_001")


def test_duplicate_is_the_first_neighbour(atlas_data):
    atlas = load_atlas(atlas_data["embeddings"])
    b, v = atlas_data["original"]
    table = find_neighbours(atlas, read_query_ids([f"{b}:{v}"]), k=3)
    assert len(table) == 3
    assert tuple(table.iloc[0][["bbox_name", "Var1"]]) == atlas_data["duplicate"]
    assert table["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert (table["similarity"].iloc[1:] < 0.99999).all()
    assert table["similarity"].is_monotonic_decreasing


def test_cli_table_and_gallery(atlas_data, tmp_path, capsys):
    b, v = atlas_data["duplicate"]
    queries = tmp_path / "q.csv"
    pd.DataFrame({"id": [f"{b}_{v}", "bbox2:" + load_atlas(atlas_data["embeddings"]).ids.Var1.iloc[-1]]}).to_csv(
        queries, index=False
    )
    rc = main(["--embeddings", str(atlas_data["embeddings"]), "--query", str(queries), "-k", "2", "--out", str(tmp_path)])
    assert rc == 0
    table = pd.read_csv(tmp_path / "neighbours.csv", dtype={"Var1": str})
    assert list(table.columns) == ["query", "rank", "bbox_name", "Var1", "id", "similarity"]
    assert len(table) == 4
    assert table.iloc[0]["Var1"] == atlas_data["original"][1]
    pngs = sorted(tmp_path.glob("neighbours_*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 5000 for p in pngs)
    assert "nearest synapses of" in capsys.readouterr().out


def test_unknown_query_is_named_with_a_suggestion(atlas_data, capsys):
    b, v = atlas_data["original"]
    rc = main(["--embeddings", str(atlas_data["embeddings"]), "--query", f"{b}:{v}x", "--no-gallery"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{b}/{v}x" in err and "not in the embeddings file" in err and "did you mean" in err


def test_embeddings_of_another_dataset_are_refused(atlas_data, small_embeddings, capsys):
    ids = pd.DataFrame({"bbox_name": ["bbox1", "bbox9"], "Var1": [atlas_data["original"][1], "stranger_007"]})
    h5 = small_embeddings(ids, np.eye(2, dtype=np.float32), dataset_dir=str(atlas_data["dataset"]))
    rc = main(["--embeddings", str(h5), "--query", "bbox9:stranger_007"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not belong to the dataset" in err and "bbox9/stranger_007" in err and str(h5) in err
