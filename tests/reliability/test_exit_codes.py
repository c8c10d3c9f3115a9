"""One exit-code convention for every command line: 0 success, 2 bad usage or bad input, 1 a failure while running.

Each command is run through the dispatcher (``python -m synclr_monai <command>``, here its ``main``) on an input
that cannot work; the bundle's commands are covered in ``test_cli_errors.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synclr_monai.__main__ import main
from synclr_monai.errors import EXIT_FAILURE, EXIT_USER_ERROR

REPO = Path(__file__).resolve().parents[2]


def _bad_input(tmp_path: Path) -> dict[str, list[str]]:
    """For each command, arguments whose input is missing or unusable (the usage itself is right)."""
    missing = str(tmp_path / "missing.h5")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("not a dataset")
    return {
        "synth": ["--out", str(taken)],  # a non-empty folder that is not a dataset
        "check": [str(tmp_path / "no_such_data")],
        "evaluate": ["--embeddings", missing, "--labels", str(tmp_path / "labels.csv")],
        "finetune": ["--dataset-dir", str(tmp_path), "--encoder", str(tmp_path / "missing.pt")],
        "neighbours": ["--embeddings", missing, "--query", "bbox1:syn_000", "--no-gallery"],
        "propagate": ["--embeddings", missing, "--labels", str(tmp_path / "labels.csv")],
        "outliers": ["--embeddings", missing],
        "explore": ["--embeddings", missing],
    }


@pytest.mark.parametrize(
    "command", ["synth", "check", "evaluate", "finetune", "neighbours", "propagate", "outliers", "explore"]
)
def test_bad_input_exits_with_2_and_names_the_file(command, tmp_path, capsys):
    args = _bad_input(tmp_path)[command]
    assert main([command, *args]) == EXIT_USER_ERROR == 2
    printed = capsys.readouterr()
    text = printed.err + printed.out  # `check` prints its report, naming each bad file, on stdout
    named = {"synth": "taken", "check": "no_such_data", "finetune": "missing.pt"}.get(command, "missing.h5")
    assert ("error" in text or "problem" in text) and named in text and "Traceback" not in text


@pytest.mark.parametrize("command", ["synth", "evaluate", "finetune", "neighbours", "explore"])
def test_bad_usage_exits_with_2(command, capsys):
    assert main([command, "--no-such-flag"]) == 2
    assert "error: " in capsys.readouterr().err  # argparse's usage message


def test_unknown_command_exits_with_2(capsys):
    assert main(["evaluat"]) == 2
    assert "unknown command 'evaluat'" in capsys.readouterr().err


def test_a_failure_while_running_exits_with_1(monkeypatch, tmp_path, capsys):
    import synclr_monai.evaluation.cli as evaluate

    def fail(args):
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(evaluate, "_run", fail)
    args = ["evaluate", "--embeddings", str(tmp_path / "e.h5"), "--labels", str(tmp_path / "l.csv")]
    assert main(args) == EXIT_FAILURE == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "the disk went away" in err


def test_the_process_exit_code_is_the_commands():
    done = subprocess.run(
        [sys.executable, "-m", "synclr_monai", "check", "/no/such/dataset"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "/no/such/dataset: dataset root does not exist" in done.stdout
