"""ProgressHandler: progress bar and MONAI StatsHandler lines on rank 0 only."""

from __future__ import annotations

import logging

import ignite.distributed as idist
from toy_training import make_loader, make_trainer

from synclr_monai.handlers import ProgressHandler


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def capture(name: str) -> ListHandler:
    handler = ListHandler()
    logging.getLogger(name).addHandler(handler)
    return handler


def test_stats_lines_every_n_iterations():
    lines = capture("test.progress.rank0")
    trainer = make_trainer(max_epochs=1, loader=make_loader(n=16, batch_size=4))
    handler = ProgressHandler(log_every=2, name="test.progress.rank0")
    handler.attach(trainer)
    trainer.run()
    assert handler.bar is not None
    iteration_lines = [line for line in lines.lines if "Iter:" in line]
    assert [line.split(" --")[0] for line in iteration_lines] == ["Epoch: 1/1, Iter: 2/4", "Epoch: 1/1, Iter: 4/4"]
    assert all("loss:" in line and "lr: 0.1000" in line and "top1:" in line for line in iteration_lines)
    assert any("epoch_loss" in line for line in lines.lines)


def test_nothing_on_other_ranks(monkeypatch):
    lines = capture("test.progress.rank1")
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    trainer = make_trainer()
    handler = ProgressHandler(log_every=1, name="test.progress.rank1")
    handler.attach(trainer)
    trainer.run()
    assert handler.bar is None and handler.stats_handler is None and lines.lines == []
