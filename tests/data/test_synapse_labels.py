"""Labels CSV reading and the join with embedding ids."""

from __future__ import annotations

import pandas as pd
import pytest

from synclr_monai.data.synapse_labels import join_labels, read_labels


def test_read_labels_keeps_string_ids_and_picks_type(tmp_path):
    path = tmp_path / "synapse_types.csv"
    path.write_text("bbox_name,Var1,type,note\nbbox1,001,spine,x\nbbox1,NA,shaft,y\nbbox2,001,shaft,z\n")
    table = read_labels(path)
    assert table.to_dict("list") == {
        "bbox_name": ["bbox1", "bbox1", "bbox2"],
        "Var1": ["001", "NA", "001"],
        "label": ["spine", "shaft", "shaft"],
    }
    assert read_labels(path, "note")["label"].tolist() == ["x", "y", "z"]


def test_read_labels_errors_name_the_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("bbox_name,type\nbbox1,a\n")
    with pytest.raises(ValueError, match=r"labels\.csv lacks the column\(s\) \['Var1'\]"):
        read_labels(path)
    path.write_text("bbox_name,Var1,a,b\nbbox1,s1,x,y\n")
    with pytest.raises(ValueError, match="cannot tell which column"):
        read_labels(path)
    path.write_text("bbox_name,Var1,type\nbbox1,s1,x\nbbox1,s1,y\n")
    with pytest.raises(ValueError, match="bbox1/s1"):
        read_labels(path)
    path.write_text("bbox_name,Var1,type\nbbox1,s1,\n")
    with pytest.raises(ValueError, match="empty label for bbox1/s1"):
        read_labels(path)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_labels(tmp_path / "nope.csv")


def test_join_labels_order_and_missing_ids():
    labels = pd.DataFrame({"bbox_name": ["bbox1", "bbox1", "bbox2"], "Var1": ["a", "b", "a"], "label": ["x", "y", "z"]})
    ids = pd.DataFrame({"bbox_name": ["bbox2", "bbox1"], "Var1": ["a", "a"]})
    assert join_labels(ids, labels).tolist() == ["z", "x"]
    ids = pd.DataFrame({"bbox_name": ["bbox1", "bbox3", "bbox2"], "Var1": ["a", "q", "b"]})
    with pytest.raises(ValueError, match=r"2 embedded synapse\(s\) have no label in my\.csv: bbox3/q, bbox2/b"):
        join_labels(ids, labels, source="my.csv")
