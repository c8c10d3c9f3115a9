"""Training run for the kill tests: a toy trainer that checkpoints every iteration and resumes with "auto".

Run in a forked child (``multiprocessing`` forkserver, so that torch is imported once) or as a script:
``python kill_worker.py OUT_DIR MAX_EPOCHS``. A large ``ballast`` entry makes each save take a while, so
that kills at random instants often land inside a write.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))  # toy_training

import torch  # noqa: E402
from toy_training import make_loader, make_trainer  # noqa: E402

from synclr_monai.handlers import CheckpointHandler  # noqa: E402

EPOCH_LENGTH = 4  # 16 samples, batch 4


class Ballast:
    """Four MiB of checkpoint payload (restored and checked on resume)."""

    def __init__(self) -> None:
        self.data = torch.arange(2**20, dtype=torch.float32)

    def state_dict(self) -> dict:
        return {"data": self.data}

    def load_state_dict(self, state: dict) -> None:
        assert torch.equal(state["data"], self.data), "ballast damaged"


def noop() -> None:
    """Nothing: starting it starts the forkserver (and its imports) before the timed part of a test."""


def train(out: str, max_epochs: int, ready=None) -> None:
    """Train (resuming from the latest checkpoint); ``ready.set()`` once the first iteration after start-up ran."""
    torch.set_num_threads(1)
    out_dir = Path(out)
    trainer = make_trainer(max_epochs=max_epochs, loader=make_loader(n=16, batch_size=4), momentum=0.9)
    handler = CheckpointHandler(out_dir / "checkpoints", save_interval=1, n_saved=2, resume="auto",
                                save_dict={"ballast": Ballast()}, run_config={"net": "TinyNet"})
    handler.attach(trainer)
    if ready is not None:
        from ignite.engine import Events

        trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: ready.set())
    trainer.run()
    (out_dir / "report.json").write_text(json.dumps({"iteration": trainer.state.iteration}))


if __name__ == "__main__":
    train(sys.argv[1], int(sys.argv[2]))
