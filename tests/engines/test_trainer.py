"""ContrastiveTrainer: outputs, accumulation, clipping, scheduler stepping, batched augmentation, AMP."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Events
from toy_training import TinyNet, assert_same_weights, make_loader, make_trainer, mean_pair_loss, snapshot

from synclr_monai.engines import AccumulationPhase, accumulation_phase, resolve_amp_dtype, total_optimizer_steps
from synclr_monai.losses import NTXentLoss, nt_xent_loss
from synclr_monai.optimizers import WarmupCosineLR


def record_outputs(trainer) -> list[dict]:
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    return outputs


def count_optimizer_steps(optimizer) -> list[int]:
    steps: list[int] = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    return steps


def test_output_metrics_and_scheduler_per_optimizer_step():
    # 3 batches per epoch with accumulation 2: groups [1, 2], [3] -> 2 optimizer steps per epoch
    trainer = make_trainer(max_epochs=2, loader=make_loader(n=12, batch_size=4), loss_function=NTXentLoss(0.1),
                           accumulation_steps=2)
    scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=1, gamma=0.5)
    trainer.lr_scheduler = scheduler
    steps = count_optimizer_steps(trainer.optimizer)
    outputs = record_outputs(trainer)
    epoch_losses: list[float] = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epoch_losses.append(e.state.metrics["epoch_loss"]))
    trainer.run()

    assert trainer.state.iteration == 6
    assert len(steps) == 4 and scheduler.last_epoch == 4
    # lr reported is the one used for the update: halves after each optimizer step
    assert [o["lr"] for o in outputs] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025, 0.0125])
    for o in outputs:
        assert set(o) == {"loss", "lr", "top1"}
        assert o["loss"].ndim == 0 and torch.isfinite(o["loss"]) and not o["loss"].requires_grad
        assert 0.0 <= float(o["top1"]) <= 1.0
    assert epoch_losses == pytest.approx([sum(float(o["loss"]) for o in outputs[i:i + 3]) / 3 for i in (0, 3)])


def test_accumulation_over_half_batches_equals_full_batch():
    clip = 0.005  # below the gradient norm (~0.016) to be active, so clipping must act on the accumulated gradient

    def one_step(batch_size: int, accumulation: int, clip_grad_norm: float | None) -> dict:
        trainer = make_trainer(loader=make_loader(n=8, batch_size=batch_size), accumulation_steps=accumulation,
                               clip_grad_norm=clip_grad_norm, lr=0.5)
        steps = count_optimizer_steps(trainer.optimizer)
        trainer.run()
        assert len(steps) == 1
        return snapshot(trainer.network)

    initial = snapshot(make_trainer().network)
    full = one_step(8, 1, clip)
    halves = one_step(4, 2, clip)
    assert_same_weights(full, halves)
    assert not torch.allclose(full["conv.weight"], initial["conv.weight"])
    # clipping was active: without it the update differs
    assert not torch.allclose(one_step(8, 1, None)["conv.weight"], full["conv.weight"])


def test_matches_plain_loop_with_short_last_group():
    """3 batches per epoch, accumulation 2: the last group has one batch, weighted as a full group."""
    loader = make_loader(n=12, batch_size=4)
    trainer = make_trainer(max_epochs=2, loader=loader, accumulation_steps=2, clip_grad_norm=0.01, lr=0.2)
    trainer.run()

    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    for _ in range(2):
        batches = list(loader)
        for group in (batches[:2], batches[2:]):
            opt.zero_grad()
            for batch in group:
                z1, z2 = net(torch.cat([batch["view1"], batch["view2"]])).chunk(2)
                (mean_pair_loss(z1, z2) / len(group)).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.01)
            opt.step()
    assert_same_weights(snapshot(trainer.network), snapshot(net))


def test_batched_augmentation_on_device():
    calls = []

    def augment(cubes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append((cubes.device, tuple(cubes.shape)))
        return cubes, cubes.flip(-1)

    cubes = [{"image": torch.randn(4, 3, 16, 16, 16)} for _ in range(2)]
    trainer = make_trainer(loader=cubes, batch_augment=augment)
    outputs = record_outputs(trainer)
    trainer.run()
    assert calls == [(torch.device("cpu"), (4, 3, 16, 16, 16))] * 2
    assert all(torch.isfinite(o["loss"]) and o["loss"] > 0 for o in outputs)


def test_batched_augmentation_uses_the_datasets_view_params():
    """Cubes cut with ``views=False`` carry the parameters their worker drew; the device path applies them."""
    from synclr_monai.transforms import BatchedTwoViewAugment, sample_two_view_params

    import numpy as np

    cubes = torch.randn(4, 3, 16, 16, 16)
    cubes[:, 1:] = (cubes[:, 1:] > 0).float()
    params = sample_two_view_params(np.random.RandomState(3), 4, 16)
    aug = BatchedTwoViewAugment()
    seen = []

    def augment(x, p=None):
        seen.append(p)
        return aug(x, p)

    batch = {"image": cubes, "view_params": params}
    trainer = make_trainer(loader=[batch], batch_augment=augment)
    v1, v2 = trainer.get_views(batch)
    assert seen == [params]
    e1, e2 = aug(cubes, params)
    torch.testing.assert_close(v1, e1)
    torch.testing.assert_close(v2, e2)


def test_bad_batches_give_clear_errors():
    trainer = make_trainer()
    with pytest.raises(ValueError, match="lacks the view keys.*batch_augment"):
        trainer.get_views({"image": torch.zeros(2, 3, 4, 4, 4)})
    with pytest.raises(ValueError, match="lacks the view keys"):
        trainer.get_views({"view1": torch.zeros(2, 3, 4, 4, 4)})
    with pytest.raises(ValueError, match="differ in shape"):
        trainer.get_views({"view1": torch.zeros(2, 3, 4, 4, 4), "view2": torch.zeros(2, 3, 5, 5, 5)})
    augmenting = make_trainer(batch_augment=lambda c: (c, c))
    with pytest.raises(ValueError, match="cubes under 'image'"):
        augmenting.get_views({"view1": torch.zeros(1), "view2": torch.zeros(1)})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"accumulation_steps": 0}, "accumulation_steps"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm"),
        ({"amp": True, "amp_dtype": "int8"}, "amp_dtype"),
        ({"amp": True, "amp_kwargs": {"dtype": torch.float16}}, "amp_kwargs"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_trainer(**kwargs)


def test_amp_bf16_on_cpu():
    trainer = make_trainer(max_epochs=1, amp=True, amp_dtype="bfloat16", clip_grad_norm=1.0)
    initial = snapshot(trainer.network)
    outputs = record_outputs(trainer)
    trainer.run()
    assert trainer.scaler is None  # no loss scaling for bfloat16
    assert set(trainer.network.seen_dtypes) == {torch.bfloat16}
    assert all(torch.isfinite(o["loss"]) and o["loss"].dtype == torch.float32 for o in outputs)
    assert not torch.equal(initial["conv.weight"], trainer.network.conv.weight)

    full_precision = make_trainer(amp=False)
    full_precision.run()
    assert set(full_precision.network.seen_dtypes) == {torch.float32}


def test_fp16_on_cpu_falls_back_to_bf16():
    with pytest.warns(UserWarning, match="bfloat16"):
        trainer = make_trainer(amp=True, amp_dtype="float16")
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
    trainer.run()
    assert set(trainer.network.seen_dtypes) == {torch.bfloat16}
    # the scaler would be kept through run() (MONAI's Trainer.run replaces it)
    assert trainer.scaler is None


def test_non_finite_gradients_do_not_reach_the_weights(caplog):
    calls = []

    def loss_nan_second(z1, z2):
        calls.append(1)
        loss = mean_pair_loss(z1, z2)
        return loss * float("nan") if len(calls) == 2 else loss

    trainer = make_trainer(max_epochs=1, loader=make_loader(n=12, batch_size=4), loss_function=loss_nan_second)
    scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=1, gamma=0.5)
    trainer.lr_scheduler = scheduler
    weights = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: weights.update({e.state.iteration: snapshot(e.network)})
    )
    with caplog.at_level(logging.WARNING):
        trainer.run()
    assert_same_weights(weights[1], weights[2])  # the NaN iteration changed nothing
    assert not torch.equal(weights[2]["conv.weight"], weights[3]["conv.weight"])
    assert all(torch.isfinite(v).all() for v in weights[3].values())
    assert scheduler.last_epoch == 2  # the skipped update did not advance the schedule
    assert "iteration 2: non-finite gradients" in caplog.text


def test_accumulation_phase():
    # epoch of 5 iterations, groups of 2: [1,2] [3,4] [5]
    phases = [accumulation_phase(i, 5, 2) for i in range(1, 11)]
    assert phases[:5] == [
        AccumulationPhase(True, False, 2),
        AccumulationPhase(False, True, 2),
        AccumulationPhase(True, False, 2),
        AccumulationPhase(False, True, 2),
        AccumulationPhase(True, True, 1),
    ]
    assert phases[5:] == phases[:5]  # groups restart with each epoch
    assert accumulation_phase(7, None, 3) == AccumulationPhase(True, False, 3)
    assert accumulation_phase(4, 5, 1) == AccumulationPhase(True, True, 1)
    with pytest.raises(ValueError):
        accumulation_phase(0, 5, 2)


def test_resolve_amp_dtype():
    assert resolve_amp_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_amp_dtype(torch.float16, "cuda") == torch.float16
    with pytest.raises(ValueError, match="amp_dtype"):
        resolve_amp_dtype("float32", "cpu")


def test_grad_scaler_path_unscales_before_clipping_and_skips_bad_steps():
    """The float16/CUDA path, exercised on the CPU with a CPU GradScaler in place of the CUDA one."""
    calls = []

    def loss_nan_third(z1, z2):
        calls.append(1)
        loss = mean_pair_loss(z1, z2)
        return loss * float("nan") if len(calls) == 3 else loss

    def run(with_scaler: bool) -> tuple:
        calls.clear()
        trainer = make_trainer(max_epochs=1, loader=make_loader(n=16, batch_size=4), loss_function=loss_nan_third,
                               clip_grad_norm=0.005, lr=0.5)
        trainer.lr_scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=1, gamma=0.5)
        if with_scaler:
            trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=1000)
        trainer.run()
        return trainer, snapshot(trainer.network)

    scaled, scaled_weights = run(True)
    plain, plain_weights = run(False)
    # clipping saw the unscaled gradients: same update as without scaling (scales are powers of two)
    assert_same_weights(scaled_weights, plain_weights)
    assert scaled.scaler.get_scale() == 2.0**11  # halved once, for the NaN step, which was skipped
    assert scaled.lr_scheduler.last_epoch == plain.lr_scheduler.last_epoch == 3


def test_schedule_sized_by_total_optimizer_steps_lasts_the_whole_run():
    # 3 iterations per epoch in groups of 2 ([1, 2] [3]): 2 optimizer steps per epoch, not 3 // 2 = 1.5
    assert total_optimizer_steps(100, 3, 2) == 200
    assert total_optimizer_steps(0, 3, 2) == 0
    with pytest.raises(ValueError, match="iterations_per_epoch"):
        total_optimizer_steps(1, 0, 2)
    epochs, loader = 100, make_loader(n=6, batch_size=2)  # 3 iterations per epoch
    trainer = make_trainer(max_epochs=epochs, loader=loader, accumulation_steps=2, lr=1e-3)
    steps = total_optimizer_steps(epochs, len(loader), 2)
    assert trainer.optimizer_steps == steps == 200
    trainer.lr_scheduler = WarmupCosineLR(trainer.optimizer, warmup_steps=20, total_steps=steps)
    lrs: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    trainer.run()
    assert len(lrs) == 200 == trainer.lr_scheduler.last_epoch
    assert min(lrs) > 0  # no step of the run is taken at learning rate 0
    assert lrs[-1] == min(lrs[20:]) and lrs[-1] < 1e-3 * 1e-3  # the cosine ends at the last step


def test_schedule_shorter_than_the_run_is_refused():
    trainer = make_trainer(max_epochs=100, loader=make_loader(n=6, batch_size=2), accumulation_steps=2)
    # the old arithmetic: 100 * 3 // 2 = 150 steps for a run of 200
    trainer.lr_scheduler = WarmupCosineLR(trainer.optimizer, warmup_steps=10, total_steps=150)
    with pytest.raises(ValueError, match=r"total_steps=150 but the run takes 200 optimizer steps"):
        trainer.run()


def test_synapse_ids_reach_a_loss_that_asks_for_them():
    seen: list[torch.Tensor] = []

    class RecordingLoss(NTXentLoss):
        def forward(self, z1, z2, synapse=None):
            seen.append(synapse)
            projections.append((z1.detach().clone(), z2.detach().clone()))
            return super().forward(z1, z2, synapse)

    projections: list[tuple[torch.Tensor, torch.Tensor]] = []

    ids = [torch.tensor([3, 3, -1, 7]), torch.tensor([1, 2, 1, 2])]
    loader = [{**b, "synapse": i} for b, i in zip(make_loader(n=8, batch_size=4), ids)]
    trainer = make_trainer(loader=loader, loss_function=RecordingLoss(0.2, mask_same_synapse=True))
    outputs = record_outputs(trainer)
    trainer.run()
    assert [s.tolist() for s in seen] == [i.tolist() for i in ids]
    # the reported loss is the masked one: recomputed from the projections the loss saw
    for o, (z1, z2), i in zip(outputs, projections, ids):
        torch.testing.assert_close(o["loss"], nt_xent_loss(z1, z2, 0.2, synapse=i))
        assert o["loss"] < nt_xent_loss(z1, z2, 0.2)
    # without the option the loss is called with the projections only, ids or not
    seen.clear()
    make_trainer(loader=loader, loss_function=RecordingLoss(0.2)).run()
    assert seen == [None, None]
    # a loss that needs ids on a batch without them: one clear error
    trainer = make_trainer(loader=make_loader(n=4, batch_size=4), loss_function=NTXentLoss(0.2, mask_same_synapse=True))
    with pytest.raises(ValueError, match="no 'synapse' ids"):
        trainer.run()
