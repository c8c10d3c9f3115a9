"""The contrastive (SimCLR) trainer: MONAI's ``SupervisedTrainer`` with two views per sample.

Each iteration takes a batch's two views (or makes them on the device from the batch's cubes), runs the
network once on both, computes the contrastive loss and its top-1 accuracy, and accumulates gradients;
the optimizer (and the learning-rate scheduler) steps once per accumulation group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.inferers import Inferer, SimpleInferer
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from synclr_monai.engines.accumulation import accumulation_phase, total_optimizer_steps
from synclr_monai.engines.amp import make_grad_scaler, resolve_amp_dtype

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
    from ignite.metrics import Metric

__all__ = ["EPOCH_LOSS", "ContrastiveTrainer", "OutputKeys", "default_train_metrics", "lower_is_better"]


class OutputKeys:
    """Keys of the per-iteration ``engine.state.output`` dict of :class:`ContrastiveTrainer`."""

    LOSS = "loss"  #: the contrastive loss of the iteration (0-dim tensor, detached, not divided for accumulation)
    LR = "lr"  #: learning rate of the first parameter group used for this iteration's update (float)
    TOP1 = "top1"  #: fraction of anchors whose positive is their most similar candidate (0-dim tensor)


#: name of the default key metric, the mean loss over an epoch (in ``engine.state.metrics``).
EPOCH_LOSS = "epoch_loss"


def lower_is_better(current: float, best: float) -> bool:
    """Metric comparison for losses (MONAI's ``metric_cmp_fn``): ``True`` when ``current`` improves on ``best``.

    Args:
        current: the new value.
        best: the best value so far.

    Returns:
        whether ``current < best``.
    """
    return current < best


def _loss_of(output: Mapping) -> torch.Tensor:
    return output[OutputKeys.LOSS]


def default_train_metrics(device: str | torch.device = "cpu") -> dict[str, Metric]:
    """The trainer's default key metric: ``{"epoch_loss": mean loss over the epoch}``.

    Args:
        device: where the running sum is kept: the training device, so that no per-iteration copy is made.

    Returns:
        a dict for ``key_train_metric`` (ignite ``Average``, all-reduced across processes under DDP).
    """
    from ignite.metrics import Average

    return {EPOCH_LOSS: Average(output_transform=_loss_of, device=device)}


def _default_accuracy() -> Callable[[torch.Tensor, torch.Tensor], Any]:
    from synclr_monai.losses import contrastive_accuracy

    return contrastive_accuracy


def _plain_tensor(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor in the batch, got {type(x).__name__}.")
    # The views' metadata is not used in contrastive training, and MetaTensor's __torch_function__
    # adds work to every operation of the forward pass.
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class ContrastiveTrainer(SupervisedTrainer):
    """SimCLR training on MONAI's :class:`~monai.engines.SupervisedTrainer` (an Ignite ``Engine``).

    One iteration:

    1. takes the views: ``batch["view1"]``, ``batch["view2"]`` (``[B, C, ...]``); or, with
       ``batch_augment``, the cubes ``batch["image"]`` moved to the device and turned into two views there;
    2. runs ``network`` once on both views concatenated (``[2B, C, ...]``, so batch-norm statistics and
       DDP's gradient hooks see a single forward pass) under ``torch.autocast`` when ``amp``;
    3. computes ``loss_function(z1, z2)`` in float32 (``loss_function(z1, z2, batch["synapse"])`` when the loss
       has ``uses_synapse_ids`` set, e.g. :class:`~synclr_monai.losses.NTXentLoss` with ``mask_same_synapse``) and
       backpropagates ``loss / group_size`` (with the
       gradient scaler for float16 on CUDA), inside DDP's ``no_sync()`` except on the group's last iteration;
    4. on the last iteration of an accumulation group: unscales, clips the gradient norm, steps the
       optimizer unless the gradients are not finite, then steps ``lr_scheduler``.

    ``engine.state.output`` is ``{"loss": Tensor, "lr": float, "top1": Tensor}`` (see :class:`OutputKeys`),
    and ``engine.state.metrics["epoch_loss"]`` holds the epoch's mean loss (the default key metric, for
    which lower is better).

    Args:
        device: the training device.
        max_epochs: number of epochs to train.
        train_data_loader: iterable of batch dicts (see above).
        network: maps ``[N, C, ...]`` views to ``[N, D]`` projections; may be wrapped in DDP.
        optimizer: optimizer of the network's parameters.
        loss_function: contrastive loss called ``loss_function(z1, z2)`` on ``[B, D]`` float32 projections,
            returning a scalar (a non-scalar result is averaged).
        epoch_length: iterations per epoch (default ``len(train_data_loader)``).
        inferer: runs the network on the concatenated views (default MONAI's ``SimpleInferer``; the bundle's
            ``train#inferer``).
        batch_augment: makes the views on the device: ``batch_augment(cubes) -> (view1, view2)``; when
            given, batches must hold ``image`` cubes instead of views.
        amp: train with automatic mixed precision.
        amp_dtype: ``"bfloat16"`` (default) or ``"float16"``; float16 uses a gradient scaler and needs CUDA
            (elsewhere it falls back to bfloat16 with a warning).
        accumulation_steps: iterations whose gradients are accumulated per optimizer step. The last group of an
            epoch is shorter when the epoch length is not a multiple; each group's gradient is that of its mean loss.
        clip_grad_norm: clip the total gradient 2-norm to this value before each optimizer step (``None``: off).
        lr_scheduler: stepped after each optimizer step (not per iteration; skipped steps do not count), so
            schedule lengths are in optimizer steps: :func:`~synclr_monai.engines.total_optimizer_steps`
            (``max_epochs * ceil(epoch_length / accumulation_steps)``). A scheduler with a ``total_steps``
            attribute shorter than that is refused when the run starts.
        accuracy_fn: ``accuracy_fn(z1, z2)`` giving the top-1 contrastive accuracy; default
            :func:`synclr_monai.losses.contrastive_accuracy`.
        skip_non_finite: do not apply an update whose gradients hold NaN/inf (the gradients are the same on all
            DDP ranks, so all skip together); with a gradient scaler this is the scaler's own behaviour.
        view_keys: batch keys of the two views.
        image_key: batch key of the cubes for ``batch_augment``.
        params_key: batch key of view parameters drawn by the dataset (``ContrastiveCubeDataset(views=False)``
            puts them under ``"view_params"``); when present they are passed to ``batch_augment(cubes, params)``.
        non_blocking: asynchronous host-to-device copies.
        iteration_update: replaces :meth:`_iteration` (see ``SupervisedTrainer``).
        postprocessing: see ``SupervisedTrainer``.
        key_train_metric: default :func:`default_train_metrics`.
        additional_metrics: see ``SupervisedTrainer``.
        metric_cmp_fn: default :func:`lower_is_better` (the default key metric is a loss).
        train_handlers: handlers with ``attach(engine)``, attached in order.
        event_names: see ``SupervisedTrainer``.
        event_to_attr: see ``SupervisedTrainer``.
        decollate: default ``False``: the output holds scalars, not per-sample data.
        optim_set_to_none: ``optimizer.zero_grad(set_to_none=...)``.
        to_kwargs: extra arguments of ``Tensor.to`` for the batch.
        amp_kwargs: extra arguments of ``torch.autocast`` (not ``dtype``: use ``amp_dtype``).
        compile: wrap the network with ``torch.compile``.
        compile_kwargs: arguments of ``torch.compile``.

    Raises:
        ValueError: for invalid ``accumulation_steps``, ``clip_grad_norm``, ``amp_dtype`` or ``amp_kwargs``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        epoch_length: int | None = None,
        inferer: Inferer | None = None,
        batch_augment: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        amp: bool = False,
        amp_dtype: str | torch.dtype = "bfloat16",
        accumulation_steps: int = 1,
        clip_grad_norm: float | None = None,
        lr_scheduler: Any | None = None,
        accuracy_fn: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
        skip_non_finite: bool = True,
        view_keys: Sequence[str] = ("view1", "view2"),
        image_key: str = "image",
        params_key: str | None = "view_params",
        non_blocking: bool = False,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable[[Any, Any], bool] = lower_is_better,
        train_handlers: Sequence | None = None,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        compile: bool = False,
        compile_kwargs: dict | None = None,
    ) -> None:
        if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be a positive integer, got {accumulation_steps!r}.")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm!r}.")
        if amp_kwargs and ({"dtype", "device_type"} & set(amp_kwargs)):
            raise ValueError("amp_kwargs must not set 'dtype' or 'device_type': use amp_dtype and device.")
        if len(view_keys) != 2:
            raise ValueError(f"view_keys must name two batch keys, got {view_keys!r}.")
        amp_dtype = resolve_amp_dtype(amp_dtype, device) if amp else torch.bfloat16
        if key_train_metric is None:
            key_train_metric = default_train_metrics(device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            inferer=SimpleInferer() if inferer is None else inferer,
            non_blocking=non_blocking,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            train_handlers=None,  # attached below, once every attribute a handler may read exists
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
            compile=compile,
            compile_kwargs=compile_kwargs,
            accumulation_steps=accumulation_steps,
        )
        # kept so that checkpoints can save the metrics' running sums for an exact mid-epoch resume
        self.train_metrics = {**key_train_metric, **(additional_metrics or {})}
        self.batch_augment = batch_augment
        self.params_key = params_key
        self.amp_dtype = amp_dtype
        self.scaler = make_grad_scaler(amp, amp_dtype, self.state.device)
        self.clip_grad_norm = clip_grad_norm
        self.lr_scheduler = lr_scheduler
        self.accuracy_fn = _default_accuracy() if accuracy_fn is None else accuracy_fn
        self.skip_non_finite = skip_non_finite
        self.view_keys = tuple(view_keys)
        self.image_key = image_key
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    @property
    def optimizer_steps(self) -> int | None:
        """Optimizer steps of the whole run (:func:`~synclr_monai.engines.total_optimizer_steps`); None when the
        epoch length is unknown."""
        if not self.state.epoch_length:
            return None
        return total_optimizer_steps(self.state.max_epochs, self.state.epoch_length, self.accumulation_steps)

    def run(self) -> None:  # type: ignore[override]
        """Train until ``max_epochs``, continuing from the engine's state (e.g. one restored from a checkpoint).

        ``monai.engines.Trainer.run`` would replace the gradient scaler (and any state restored into it)
        with a new CUDA scaler, so this goes straight to ``Workflow.run``.

        Raises:
            ValueError: when ``lr_scheduler.total_steps`` is shorter than :attr:`optimizer_steps` (the end of
                the run would train at the schedule's floor).
        """
        planned = getattr(self.lr_scheduler, "total_steps", None)
        steps = self.optimizer_steps
        if planned is not None and steps is not None and planned < steps:
            raise ValueError(
                f"lr_scheduler.total_steps={planned} but the run takes {steps} optimizer steps (max_epochs "
                f"{self.state.max_epochs} x ceil({self.state.epoch_length} iterations / accumulation_steps "
                f"{self.accumulation_steps})): size the schedule with synclr_monai.engines.total_optimizer_steps."
            )
        Workflow.run(self)

    def _move(self, x: Any) -> torch.Tensor:
        return _plain_tensor(x).to(self.state.device, non_blocking=self.non_blocking, **self.to_kwargs)

    def get_views(self, batchdata: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of a batch, on the training device.

        Args:
            batchdata: a dict with the two ``view_keys`` (or ``image_key`` when ``batch_augment`` is set), or a
                ``(view1, view2)`` pair.

        Returns:
            ``(view1, view2)``, each ``[B, C, ...]``.

        Raises:
            ValueError: when the batch is empty or lacks the keys, or the views' shapes differ.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for the current iteration.")
        if self.batch_augment is not None:
            if not isinstance(batchdata, Mapping) or self.image_key not in batchdata:
                found = list(batchdata) if isinstance(batchdata, Mapping) else type(batchdata).__name__
                raise ValueError(
                    f"batch_augment is set, so batches need the cubes under {self.image_key!r}; got {found}."
                )
            cubes = self._move(batchdata[self.image_key])
            # parameters drawn by the dataset's workers (seeded, mask-aware checked) take precedence over
            # fresh draws on the device, so batched runs follow the same seeds as per-sample ones
            params = batchdata.get(self.params_key) if self.params_key else None
            if "image2" in batchdata:  # nearby-location positives: the second view has its own cube
                view1, view2 = self.batch_augment(cubes, params, self._move(batchdata["image2"]))
            else:
                view1, view2 = self.batch_augment(cubes, params) if params is not None else self.batch_augment(cubes)
        elif isinstance(batchdata, Mapping):
            missing = [k for k in self.view_keys if k not in batchdata]
            if missing:
                hint = (
                    f" The batch has {self.image_key!r}: pass batch_augment to make the views on the device."
                    if self.image_key in batchdata
                    else ""
                )
                raise ValueError(f"batch lacks the view keys {missing}; it has {sorted(batchdata)}.{hint}")
            view1, view2 = (self._move(batchdata[k]) for k in self.view_keys)
        elif isinstance(batchdata, Sequence) and len(batchdata) == 2:
            view1, view2 = (self._move(v) for v in batchdata)
        else:
            raise ValueError(f"expected a dict batch with keys {list(self.view_keys)}, got {type(batchdata).__name__}.")
        if view1.shape != view2.shape:
            raise ValueError(f"the two views differ in shape: {tuple(view1.shape)} vs {tuple(view2.shape)}.")
        return view1, view2

    def compute_loss(self, z1: torch.Tensor, z2: torch.Tensor, batchdata: Any) -> torch.Tensor:
        """``loss_function(z1, z2)``, with the batch's synapse ids when the loss asks for them.

        Raises:
            ValueError: when the loss uses synapse ids and the batch has none (a dataset that does not write
                ``"synapse"``, or views passed as a pair).
        """
        if not getattr(self.loss_function, "uses_synapse_ids", False):
            return self.loss_function(z1, z2)
        if not isinstance(batchdata, Mapping) or "synapse" not in batchdata:
            raise ValueError(
                "the loss keeps cubes of one synapse out of each other's negatives (mask_same_synapse) but the batch "
                "has no 'synapse' ids: use ContrastiveCubeDataset, or turn mask_same_synapse off."
            )
        return self.loss_function(z1, z2, _plain_tensor(batchdata["synapse"]).to(z1.device))

    def _iteration(self, engine: ContrastiveTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        """One contrastive training iteration (see the class docstring).

        Args:
            engine: this trainer (Ignite passes it explicitly).
            batchdata: the batch from the data loader.

        Returns:
            ``{"loss", "lr", "top1"}`` (see :class:`OutputKeys`).

        Raises:
            ValueError: when the batch is unusable (see :meth:`get_views`).
        """
        view1, view2 = engine.get_views(batchdata)
        phase = accumulation_phase(engine.state.iteration, engine.state.epoch_length, engine.accumulation_steps)
        network = engine.network
        network.train()
        if phase.zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        # Under DDP, gradients are all-reduced only on the iteration that steps the optimizer.
        no_sync = getattr(network, "no_sync", None)
        sync_context = no_sync() if (no_sync is not None and not phase.step) else contextlib.nullcontext()
        with sync_context:
            with torch.autocast(
                engine.state.device.type, dtype=engine.amp_dtype, enabled=engine.amp, **engine.amp_kwargs
            ):
                z = engine.inferer(torch.cat([view1, view2]), network)
            # The loss runs in float32: a softmax over 2B candidates at temperature 0.1 loses too much in 16 bits.
            z1, z2 = z.float().chunk(2)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss = engine.compute_loss(z1, z2, batchdata).mean()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            scaled = loss / phase.group_size if phase.group_size > 1 else loss
            (engine.scaler.scale(scaled) if engine.scaler is not None else scaled).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        lr = float(engine.optimizer.param_groups[0]["lr"])
        if phase.step:
            engine.optimizer_step()
        engine.state.output = {
            OutputKeys.LOSS: loss.detach(),
            OutputKeys.LR: lr,
            OutputKeys.TOP1: engine.accuracy_fn(z1.detach(), z2.detach()),
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def optimizer_step(self) -> bool:
        """Unscale, clip, step the optimizer and then the scheduler, unless the gradients are not finite.

        Returns:
            whether the optimizer applied the update.
        """
        scaler = self.scaler
        if scaler is not None:
            if self.clip_grad_norm is not None:
                scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(self._parameters(), self.clip_grad_norm)
            scale = scaler.get_scale()
            scaler.step(self.optimizer)  # skipped by the scaler when a gradient is inf/NaN
            scaler.update()
            stepped = scaler.get_scale() >= scale  # the scale only drops after a skipped step
        else:
            norm = None
            if self.clip_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(self._parameters(), self.clip_grad_norm)
            elif self.skip_non_finite:
                grads = [p.grad for p in self._parameters() if p.grad is not None]
                if grads:
                    norm = torch.nn.utils.get_total_norm(grads)
            stepped = not (self.skip_non_finite and norm is not None and not bool(torch.isfinite(norm)))
            if stepped:
                self.optimizer.step()
            else:
                self.logger.warning(
                    f"iteration {self.state.iteration}: non-finite gradients (norm {float(norm)}); update skipped."
                )
        if stepped and self.lr_scheduler is not None:
            self.lr_scheduler.step()
        return stepped
