"""Issue 13, items 5, 10 and 13: unknown config keys, unwritable outputs found at start, errors on one screen.

The bundle is run as users run it (``python -m monai.bundle run ...`` in a subprocess); every case stops at
start-up, so each run costs only the imports.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synclr_monai.errors import OutputError
from synclr_monai.run_guard import check_output_locations

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
TINY = ["--cube_size", "16", "--backbone", "resnet10", "--batch_size", "4", "--cubes_per_bbox", "4",
        "--max_epochs", "1", "--num_workers", "0", "--device", "cpu", "--amp", "False", "--wandb", "False",
        "--progress_bar", "False"]


def _bundle(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "SYNCLR_DEBUG"}
    full_env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=180)


def _train(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "training", "--config_file", str(CONFIGS / "train.yaml"), "--dataset_dir", str(root),
            "--output_dir", str(out), "--encoder_path", str(out / "model.pt"), *TINY, *extra]


def _our_lines(stderr: str) -> list[str]:
    """stderr without the warnings monai.bundle itself prints for every config file."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "(full traceback", "Traceback"))]


# ---- 5. unknown config keys ------------------------------------------------------------------------------------------
def test_a_misspelt_key_is_refused_with_the_closest_name(synthetic_root, tmp_path):
    res = _bundle(tmp_path, *_train(synthetic_root, tmp_path / "out", "--cube_sise", "16"))
    assert res.returncode == 2, res.stderr[-3000:]
    assert "unknown config key(s): cube_sise (did you mean cube_size?)" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_override_parsing_knows_run_parameters_and_nested_ids():
    from synclr_monai.engines.config_checks import TrainingConfigError, check_config_keys, cli_overrides

    files, keys = cli_overrides(["run", "training", "--config_file", "['a.yaml','b.yaml']", "--augment#blur_prob",
                                 "0", "--cube-size=16", "--amp", "--meta_file", "m.json"])
    assert files == ["a.yaml", "b.yaml"] and keys == ["augment#blur_prob", "cube_size", "amp"]
    check_config_keys(keys, {"augment", "cube_size", "amp"})
    with pytest.raises(TrainingConfigError, match=r"augmnt \(did you mean augment\?\)"):
        check_config_keys(["augmnt::blur_prob"], {"augment", "cube_size"})
    # with the config itself, nested ids are walked: a new last part is an argument, a wrong middle one is refused
    config = {"train": {"dataloader": {"num_workers": 0}, "handlers": [{"save_dir": "x"}]}, "augment": {}}
    check_config_keys(["train#dataloader#num_workers", "train#dataloader#prefetch_factor", "train#handlers#0#save_dir"], config)
    with pytest.raises(TrainingConfigError, match=r"train#dataloder#num_workers \(train#dataloder is not in the config\)"):
        check_config_keys(["train#dataloder#num_workers"], config)


# ---- 13. data errors on one screen, exit code 2, traceback in the log ------------------------------------------------
def test_a_data_error_in_training_is_one_short_message_with_exit_code_2(tmp_path):
    out = tmp_path / "out"
    res = _bundle(tmp_path, *_train(tmp_path / "no_such_data", out))
    assert res.returncode == 2, res.stderr[-3000:]
    lines = _our_lines(res.stderr)
    assert lines[0] == f"error: dataset_dir: {tmp_path / 'no_such_data'}: dataset root does not exist"
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) < 15
    log = (out / "error.log").read_text()
    assert "Traceback" in log and "dataset root does not exist" in log  # the full story is kept


def test_inference_errors_are_short_too_and_debug_prints_the_traceback(tmp_path):
    args = ["run", "inference", "--config_file", str(CONFIGS / "inference.yaml"), "--dataset_dir",
            str(tmp_path / "no_such_data"), "--output_dir", str(tmp_path / "emb"), "--encoder_path",
            str(tmp_path / "missing.pt"), "--device", "cpu"]
    res = _bundle(tmp_path, *args)
    assert res.returncode == 2, res.stderr[-3000:]
    assert _our_lines(res.stderr)[0] == f"error: encoder file {tmp_path / 'missing.pt'} does not exist"
    assert "Traceback" not in res.stderr
    res = _bundle(tmp_path, *args, SYNCLR_DEBUG="1")
    assert res.returncode == 2 and "Traceback (most recent call last)" in res.stderr
    assert f"error: encoder file {tmp_path / 'missing.pt'} does not exist" in res.stderr


def test_check_exits_2_with_one_line_per_problem(dataset_copy, capsys):
    from synclr_monai.__main__ import main

    (dataset_copy / "raw" / "bbox1" / "slice_003.tif").unlink()
    assert main(["check", str(dataset_copy)]) == 2
    out = capsys.readouterr().out
    assert "raw/bbox1: slice numbers 3 are missing" in out
    assert main(["check", str(dataset_copy / "nothing")]) == 2
    assert main(["check", str(dataset_copy), "--label-maps", str(dataset_copy / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.yaml: label-map file does not exist" in err and "Traceback" not in err


# ---- 10. unwritable destinations found at start-up -------------------------------------------------------------------
def test_an_unwritable_encoder_path_stops_the_run_before_training(synthetic_root, tmp_path):
    # Tests run as root, for whom chmod does not make a folder read-only: a path under a regular file
    # can be written by nobody, which is what a read-only destination looks like to the run.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = tmp_path / "out"
    res = _bundle(tmp_path, *_train(synthetic_root, out), "--encoder_path", str(blocker / "models" / "model.pt"))
    assert res.returncode == 2, res.stderr[-3000:]
    assert _our_lines(res.stderr)[0].startswith(f"error: encoder_path: cannot create the folder {blocker / 'models'}")
    assert not list((out / "checkpoints").glob("*.pt")) and not (out / "cache" / "bbox1.h5").exists()


def test_every_output_location_is_probed(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoints").write_text("a file where the checkpoint folder should be")
    with pytest.raises(OutputError, match=r"checkpoints: .*checkpoints is a file, not a folder"):
        check_output_locations({"output_dir": tmp_path / "out", "checkpoints": tmp_path / "out" / "checkpoints"})
    with pytest.raises(OutputError, match=r"encoder_path: .*model.pt is a folder"):
        (tmp_path / "model.pt").mkdir()
        check_output_locations(files={"encoder_path": tmp_path / "model.pt"})

    # a read-only file system (simulated: root ignores permission bits) fails at the probe write
    real_open = open

    def read_only(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(OutputError, match=r"cache_dir: cannot write in .*ro \(Read-only file system\)"):
        check_output_locations({"output_dir": tmp_path / "out2", "cache_dir": tmp_path / "ro"})
