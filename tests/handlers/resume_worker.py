"""Worker for test_resume_after_kill.py: a small training run that checkpoints often and resumes with "auto".

Usage: ``python resume_worker.py OUT_DIR [SECONDS_PER_ITERATION]``. On completion it writes
``OUT_DIR/report.json`` with the first iteration it ran, the final iteration/epoch and the file it resumed from.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))  # toy_training

import torch  # noqa: E402
from ignite.engine import Events  # noqa: E402
from toy_training import make_loader, make_trainer  # noqa: E402

from synclr_monai.handlers import CheckpointHandler  # noqa: E402

MAX_EPOCHS = 10  # 4 iterations per epoch: 40 in all


def main(out: Path, pause: float) -> None:
    trainer = make_trainer(max_epochs=MAX_EPOCHS, loader=make_loader(n=16, batch_size=4), momentum=0.9)
    trainer.lr_scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=1, gamma=0.99)
    checkpoints = CheckpointHandler(out / "checkpoints", save_interval=2, n_saved=3, resume="auto")
    checkpoints.attach(trainer)
    first: list[int] = []

    @trainer.on(Events.ITERATION_STARTED)
    def _record(engine):
        if not first:
            first.append(engine.state.iteration)
        time.sleep(pause)  # slow enough for the test to kill it mid-run

    trainer.run()
    report = {
        "first_iteration": first[0],
        "iteration": trainer.state.iteration,
        "epoch": trainer.state.epoch,
        "resumed_from": None if checkpoints.resumed_from is None else checkpoints.resumed_from.name,
    }
    (out / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
