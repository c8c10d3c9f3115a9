"""SamplingModeSwitch (mask-aware sampling from a given epoch, fallback count metric) and DatasetEpochSetter."""

from __future__ import annotations

import warnings

import pytest
import torch
from ignite.engine import Events
from toy_training import ViewDataset, make_loader, make_trainer
from torch.utils.data import DataLoader, Subset

from synclr_monai.handlers import DatasetEpochSetter, FallbackCount, SamplingModeSwitch


def run_with_switch(switch_epoch: int, max_epochs: int = 3, start_epoch: int = 0):
    loader = make_loader(n=8, batch_size=4)  # 2 iterations per epoch
    trainer = make_trainer(max_epochs=max_epochs, loader=loader)
    SamplingModeSwitch(epoch=switch_epoch).attach(trainer)
    modes, fallbacks = [], []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: modes.append(loader.dataset.mode))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: fallbacks.append(e.state.metrics["fallback_count"]))
    if start_epoch:  # as restored from a checkpoint at the end of that epoch
        trainer.state.epoch, trainer.state.iteration = start_epoch, 2 * start_epoch
    trainer.run()
    return loader.dataset, modes, fallbacks


def test_switch_at_configured_epoch_and_fallbacks_counted():
    dataset, modes, fallbacks = run_with_switch(switch_epoch=2)
    assert dataset.mode_calls == ["mask_aware"]  # once
    assert modes == ["random", "mask_aware", "mask_aware"]
    assert fallbacks == [0, 4, 4]  # the odd samples of 8 fall back in mask-aware mode


def test_resumed_run_past_the_switch_epoch_switches_at_start():
    dataset, modes, fallbacks = run_with_switch(switch_epoch=2, max_epochs=4, start_epoch=2)
    assert dataset.mode_calls == ["mask_aware"] and modes == ["mask_aware", "mask_aware"]
    assert fallbacks == [4, 4]


def test_dataset_found_through_subset_or_given():
    base = ViewDataset(n=8)
    trainer = make_trainer(loader=DataLoader(Subset(base, range(4)), batch_size=4))
    switch = SamplingModeSwitch(epoch=1)
    switch.attach(trainer)
    assert switch.dataset is base
    explicit = ViewDataset(n=2)
    SamplingModeSwitch(epoch=1, dataset=explicit, metric_name=None).attach(make_trainer())
    assert explicit.mode_calls == []  # not before the run starts


def test_bad_configuration():
    with pytest.raises(ValueError, match="epoch"):
        SamplingModeSwitch(epoch=0)
    trainer = make_trainer(loader=[{"view1": torch.zeros(2, 3, 4, 4, 4), "view2": torch.zeros(2, 3, 4, 4, 4)}])
    with pytest.raises(TypeError, match="set_sampling_mode"):
        SamplingModeSwitch(epoch=1).attach(trainer)


def test_persistent_workers_give_no_warning():
    # the dataset's shared state carries the switch to persistent workers
    # (tests/data/test_dataset.py::test_sampling_switch_reaches_persistent_workers), so no warning is due
    persistent = make_trainer(loader=make_loader(num_workers=1, persistent_workers=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SamplingModeSwitch(epoch=1).attach(persistent)


def test_fallback_count_on_batch_and_decollated_batch():
    metric = FallbackCount()
    metric.update({"fallback": torch.tensor([1, 0, 1])})
    metric.update([{"fallback": 1}, {"fallback": 0}, {"image": 0}])
    metric.update({"view1": 0})  # no flag: nothing counted
    assert metric.compute() == 3.0


def test_dataset_epoch_setter():
    loader = make_loader(n=8, batch_size=4)
    trainer = make_trainer(max_epochs=3, loader=loader)
    DatasetEpochSetter().attach(trainer)
    trainer.run()
    assert loader.dataset.epochs == [1, 2, 3]
    with pytest.raises(TypeError, match="set_epoch"):
        DatasetEpochSetter(dataset=object()).attach(trainer)
