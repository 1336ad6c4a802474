"""The one LightningModule: the model's scaling, a recurrent backbone, a readout and a task head.

The data module decides the task and the sizes (and fits the scaling); the CLI links them in, so a config
names only the model's own choices. Data flows one way::

    raw batch (named fields) -> scaling (buffers) -> backbone (B, T, H*dirs) -> readout -> fc -> head
    -> loss in scaled units; metrics and predictions in the data's units (prices, class probabilities)

The scaling lives in the model's ``state_dict``, so a checkpoint alone turns raw windows into prices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from rnn_lightning import speedups
from rnn_lightning.errors import UserInputError, check_choice, check_positive
from rnn_lightning.models.backbones import BACKBONES, RecurrentBackbone
from rnn_lightning.models.heads import (
    DEFAULT_QUANTILES,
    HEADS,
    TASK_KINDS,
    EnsembleHead,
    Head,
    check_quantiles,
    default_head,
)
from rnn_lightning.models.members import MemberBackbone, MemberLinear, clip_member_norms
from rnn_lightning.models.panel import PanelInputs, PanelScaling
from rnn_lightning.models.scaling import LEGACY_SPECS, SCALINGS, Scaling

READOUTS = ("flatten", "last")
EMBEDDING_KEY = "panel.embedding.weight"  # a panel's series embedding: (n_series, E), or (M, n_series, E)
OUTPUT_ACTIVATIONS: dict[str, type[nn.Module]] = {"none": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def resolve_head(head: str, task: str) -> str:
    """The head's registry name: ``auto`` is the task's default; a head of another task is an error."""
    head = default_head(task) if head == "auto" else head
    check_choice("head", head, HEADS)
    serves = HEADS[head][0]
    if serves != task:
        raise UserInputError(f"head {head!r} is for {serves}, but the data is a {task} task")
    return head


def build_scaling(task: str, input_size: int, spec: dict[str, Any] | None) -> Scaling:
    """The scaling module a data module's ``scaling_spec`` describes: its ``type`` and arguments.

    A spec without a type is price scaling; no spec at all (checkpoints from before specs named their
    type) is the task's old default (:data:`~rnn_lightning.models.scaling.LEGACY_SPECS`).
    """
    spec = dict(spec if spec is not None else LEGACY_SPECS.get(task, {}))
    kind = spec.pop("type", "prices")
    check_choice("scaling_spec type", kind, SCALINGS)
    return SCALINGS[kind].from_spec(input_size, spec)


class RecurrentModel(speedups.FastHookName, pl.LightningModule):
    """A recurrent backbone chosen by name, a readout and a regression or classification head.

    Args:
        backbone: ``rnn``, ``lstm``, ``gru`` or ``bilstm``.
        hidden_size: Hidden units per layer and direction.
        num_layers: Stacked recurrent layers.
        dropout: Dropout between stacked layers, in [0, 1).
        bidirectional: Read sequences both ways (``bilstm`` implies it).
        parallel_directions: On the CPU, run the two directions of each bidirectional layer at once on
            two threads (best with ``num_threads: 1`` and two free cores); same weights and outputs. A
            speed-up (:mod:`rnn_lightning.speedups`), off unless asked for. Unused with ``members`` > 1
            (the members' recurrence computes both directions in the same kernels already).
        members: Train an ensemble of this many independent networks (backbone, readout and output layer
            each) in one pass: one optimizer step updates all, on the sum of their losses, and gradient
            clipping by norm applies to each member apart. 1 is a solo model. Metrics, predictions and
            exports are the ensemble's (:mod:`rnn_lightning.models.heads.ensemble`; docs/ensembles.md).
        readout: ``flatten`` feeds every time step's output to the head (the tutorial's
            ``Linear(T*H, out)``); ``last`` feeds only the final step.
        output_activation: ``none``, or ``sigmoid`` after the head (the tutorial's RNN).
        zero_init_head: Start the head at exactly zero output; with a ``diff``/``log_return`` target
            that is the persistence forecast, which training must then improve on.
        lr: Adam's learning rate.
        weight_decay: Adam's L2 penalty.
        fused_adam: Adam's fused kernel on CPU and CUDA (torch's default elsewhere); a speed-up
            (:mod:`rnn_lightning.speedups`), the same updates up to float rounding.
        fast_hook_name: Let Lightning's per-hook ``_current_fx_name`` skip ``nn.Module.__setattr__``; a
            speed-up (:class:`rnn_lightning.speedups.FastHookName`) with no effect on the results.
        head: ``point``, ``quantile`` or ``gaussian`` (regression; docs/forecasting.md) or
            ``classification``; ``auto`` takes the task's default head (``point``, ``classification``).
        quantiles: The ``quantile`` and ``gaussian`` heads' levels, increasing in (0, 1): their forecast
            quantiles, pinball loss and central interval (lowest to highest level). Unused by the others.
        task: The task its head serves (each head family names its own); linked from the data kind.
        input_size: Features per time step; linked from the data module.
        sequence_length: Time steps per sample; linked from the data module.
        num_outputs: Days ahead (the data module's ``horizon``) or classes; linked from the data module.
        scaling_spec: How raw inputs are scaled and outputs turned back into the data's units (features,
            target transform, window normalisation); linked from the data module, which also fits it.
            A panel's (``type: panel``) also gives its series, static covariates and calendar features,
            which the model then reads (:class:`~rnn_lightning.models.panel.PanelInputs`).
        series_embedding: On a panel, the size of a learned embedding of each series fed with every
            input step; 0 for none. Unused by other data.
    """

    # The submodules' types, for the type checker (nn.Module.__getattr__ would say Tensor | Module).
    scaling: Scaling
    backbone: RecurrentBackbone  # a MemberBackbone (its subclass) for an ensemble
    head: Head  # an EnsembleHead around the configured head for an ensemble
    fc: nn.Linear | MemberLinear
    fast_hook_name: bool  # the fast_hook_name argument (speedups.FastHookName reads it)
    panel: PanelInputs | None  # a panel's series inputs and metrics; None for other data

    def __init__(
        self,
        backbone: str = "gru",
        hidden_size: int = 8,
        num_layers: int = 2,
        dropout: float = 0.0,
        bidirectional: bool = False,
        parallel_directions: bool = False,
        members: int = 1,
        readout: Literal["flatten", "last"] = "flatten",
        output_activation: Literal["none", "sigmoid", "tanh"] = "none",
        zero_init_head: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        fused_adam: bool = True,
        fast_hook_name: bool = True,
        head: str = "auto",
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        task: str = TASK_KINDS[0],
        input_size: int = 4,
        sequence_length: int = 5,
        num_outputs: int = 1,
        scaling_spec: dict[str, Any] | None = None,
        series_embedding: int = 0,
    ) -> None:
        # Read by speedups.FastHookName, also for the hook name LightningModule.__init__ sets; set before
        # nn.Module.__init__, so without nn.Module.__setattr__.
        object.__setattr__(self, speedups.FAST_HOOK_ATTRIBUTE, fast_hook_name)
        super().__init__()
        for name, value in (
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("input_size", input_size),
            ("sequence_length", sequence_length),
            ("num_outputs", num_outputs),
            ("members", members),
        ):
            check_positive(name, value)
        if not 0.0 <= dropout < 1.0:
            raise UserInputError(f"dropout must lie in [0, 1), got {dropout}")
        if lr <= 0:
            raise UserInputError(f"lr must be positive, got {lr}")
        check_choice("backbone", backbone, BACKBONES)
        check_choice("readout", readout, READOUTS)
        check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
        check_choice("task", task, TASK_KINDS)
        quantiles = check_quantiles(quantiles)
        self.save_hyperparameters()
        self.hparams.quantiles = quantiles  # a list of floats, however the config spelled it
        head = resolve_head(head, task)
        self.scaling = build_scaling(task, input_size, scaling_spec)
        head_module = HEADS[head][1].create(num_outputs, quantiles)
        # A panel's series inputs widen every step and the readout; other data keeps exactly its network.
        panel_scaling = self.scaling if isinstance(self.scaling, PanelScaling) else None
        step_width, known_width = input_size, 0
        if panel_scaling is not None:
            if series_embedding < 0:
                raise UserInputError(f"series_embedding must be >= 0, got {series_embedding}")
            step_width += PanelInputs.step_width(panel_scaling, series_embedding)
            known_width = PanelInputs.known_width(panel_scaling, num_outputs)
        # Each member is built as a solo model is, one after the other from the seeded generator (its series
        # embedding table, backbone, output layer): member 0 starts from the weights a solo model of the same
        # seed starts from.
        backbones, layers, tables = [], [], []
        for _ in range(members):
            if panel_scaling is not None and series_embedding:
                tables.append(PanelInputs.embedding_table(panel_scaling, series_embedding))
            backbones.append(
                RecurrentBackbone(
                    backbone, step_width, hidden_size, num_layers, dropout, bidirectional, parallel_directions
                )
            )
            width = backbones[-1].output_size * (sequence_length if readout == "flatten" else 1) + known_width
            layers.append(nn.Linear(width, head_module.output_size(num_outputs)))
            if zero_init_head:
                nn.init.zeros_(layers[-1].weight)
                nn.init.zeros_(layers[-1].bias)
        panel = None
        if panel_scaling is not None:
            panel = PanelInputs(panel_scaling, series_embedding, num_outputs, tables=tables)
        if members == 1:
            self.backbone, self.fc, self.head = backbones[0], layers[0], head_module
        else:
            self.backbone = MemberBackbone(backbones)
            self.fc = MemberLinear(layers)
            self.head = EnsembleHead(head_module, members, quantiles)
        self.activation = OUTPUT_ACTIVATIONS[output_activation]()
        self.panel = panel

    def forward(self, x: Tensor, known: Tensor | None = None) -> Tensor:
        """Scaled inputs ``x`` (B, T, F) -> raw outputs (B, K): scaled regression values or class logits.

        ``known`` (B, N): inputs known in advance (a panel's target calendar), fed to the readout beside the
        backbone's outputs. An ensemble's outputs are its members' (M, B, K); :meth:`forecast` combines them.
        """
        out = self.backbone(x)  # (B, T, H*dirs), or (M, B, T, H*dirs)
        if self.hparams.readout == "flatten":
            out = out.flatten(-2)  # (..., B, T*H*dirs)
        else:
            out = out[..., -1, :]  # (..., B, H*dirs)
        if known is not None:
            out = torch.cat([out, known.expand(*out.shape[:-1], known.shape[-1])], dim=-1)  # (..., B, W + N)
        result: Tensor = self.activation(self.fc(out))
        return result

    def inputs(self, batch: Any) -> Tensor:
        """A raw batch's inputs, scaled as the network expects them (B, T, F), in the weights' dtype."""
        if self.panel is not None:
            assert isinstance(self.scaling, PanelScaling)
            return self.panel.features(batch, self.scaling.inputs(batch), self.scaling)[0].to(self.dtype)
        return self.scaling.inputs(batch).to(self.dtype)

    def outputs(self, batch: Any) -> Tensor:
        """The network's raw outputs for a raw batch (B, K)."""
        if self.panel is not None:
            assert isinstance(self.scaling, PanelScaling)
            x, known = self.panel.features(batch, self.scaling.inputs(batch), self.scaling)
            panel_out: Tensor = self(x.to(self.dtype), known.to(self.dtype) if known is not None else None)
            return panel_out
        out: Tensor = self(self.inputs(batch))
        return out

    def batch_scaling(self, batch: Any) -> Any:
        """The scaling the head applies to ``batch``: the model's own, or a panel's per-sample view of it."""
        if isinstance(self.scaling, PanelScaling):
            return self.scaling.for_batch(batch)
        return self.scaling

    def take_fitted(
        self, stage: str, scaling: Callable[[], dict[str, Any] | None], moves: Callable[[], Tensor | None]
    ) -> None:
        """Take the scaling (and naive distribution) a data module fitted on its training rows.

        The data module hands them over in its ``setup`` (:meth:`InMemoryDataModule.hand_fitted`), right
        before the model's. Always when fitting (a resumed fit's checkpoint, restored after the hooks,
        brings the same), otherwise only when the model has none yet (a checkpoint restored after the
        hooks replaces it). ``scaling`` and ``moves`` compute the values only when called.
        """
        if not self.scaling.fits_from_data:
            return
        if stage == "fit" or not self.scaling.is_fitted:
            fitted = scaling()
            if fitted is None:
                return
            self.scaling.set_fitted(**fitted)
        # The naive distribution of the quantile and Gaussian heads: fitted on the training windows' moves.
        if self.head.needs_naive() and (stage == "fit" or not self.head.naive_is_fitted()):
            training = moves()
            if training is not None:
                self.head.fit_naive(training)

    def _step(self, stage: str, batch: Any) -> Tensor:
        out = self.outputs(batch)
        scaling = self.batch_scaling(batch)
        loss = self.head.loss(out, batch, scaling)
        self.head.update(stage, out, loss, batch, scaling)
        if self.panel is not None and stage != "train":
            self.panel.update(stage, self.head.predict(out.detach(), batch, scaling)["prediction"], batch)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step("test", batch)

    def for_export(self) -> RecurrentModel:
        """A copy of this model to trace: eval mode on the CPU, through nn's own recurrent kernels.

        The threaded path of ``parallel_directions`` cannot be traced; nn's recurrent modules, whose
        standard ops the exporters know, give the same outputs. The copy is changed, this model is not.
        """
        clone: RecurrentModel = copy.deepcopy(self).cpu().eval()
        clone.backbone.parallel_directions = False
        return clone

    def forecast(self, batch: Any) -> dict[str, Tensor]:
        """The head's prediction rows for one raw batch, in the data's units: the one forecast path.

        ``predict``, the reports (:func:`rnn_lightning.reports.common.predict_all`), the backtest and an
        exported file all come through here. The network runs under whatever precision context is active
        (autocast for ``bf16-mixed``); the head turns its outputs, as float32, into prices or class
        probabilities outside autocast, in float32/float64 as without it.
        """
        out = self.outputs(batch).float()
        scaling = self.batch_scaling(batch)
        if torch.is_autocast_enabled(out.device.type):
            with torch.autocast(out.device.type, enabled=False):
                return self.head.predict(out, batch, scaling)
        return self.head.predict(out, batch, scaling)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self.forecast(batch)

    def _log_epoch(self, stage: str) -> None:
        # Logging the Metric object: Lightning calls compute(), which sums the states across DDP ranks, so
        # every rank logs the same, exact value (no sync_dist, and no warning asking for it), then resets it.
        for name, metric in self.head.epoch_metrics(stage).items():
            if metric.update_count:
                self.log(name, metric)
        if self.panel is not None:  # computed across ranks already: every rank logs the same value
            for name, value in self.panel.epoch_values(stage).items():
                self.log(name, value.float())

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def use_optimizer(self, optimizer: dict[str, Any], lr_scheduler: dict[str, Any] | None = None) -> None:
        """Train with this optimizer (and scheduler) instead of the model's own Adam.

        Args:
            optimizer: ``{"class_path": ..., "init_args": {...}}``, as ``--optimizer`` gives it.
            lr_scheduler: The same for ``--lr_scheduler``, or None. ``ReduceLROnPlateau`` watches its
                ``monitor`` argument.
        """
        self.optimizer_init = optimizer
        self.lr_scheduler_init = lr_scheduler

    optimizer_init: dict[str, Any] | None = None
    lr_scheduler_init: dict[str, Any] | None = None

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip by norm each member apart (``Trainer(gradient_clip_val=...)``), as its solo model would be.

        Every parameter of an ensemble is its members' (the first dimension), a panel's series embedding
        tables included.
        """
        members = self.hparams.members
        if members > 1 and gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            clip_member_norms(self.parameters(), members, float(gradient_clip_val))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        if self.optimizer_init is not None:
            from lightning.pytorch.cli import LightningCLI, instantiate_class

            optimizer = instantiate_class(self.parameters(), self.optimizer_init)
            scheduler = instantiate_class(optimizer, self.lr_scheduler_init) if self.lr_scheduler_init else None
            return LightningCLI.configure_optimizers(self, optimizer, scheduler)
        return torch.optim.Adam(
            self.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=speedups.adam_fused(self.device, self.hparams.fused_adam),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another task or other sizes with a message naming the difference."""
        try:
            source = f"checkpoint {self.trainer.ckpt_path}"
        except RuntimeError:  # not attached to a Trainer
            source = "the checkpoint"
        self.check_checkpoint(checkpoint, source)
        state = checkpoint.get("state_dict", {})
        table = state.get(EMBEDDING_KEY)
        members = self.hparams.members
        if members > 1 and table is not None and table.dim() == 2:
            # An ensemble saved before each member had its own series embedding read one shared table: each
            # member now reads its own copy of it, which computes the same forecasts.
            state[EMBEDDING_KEY] = table.expand(members, *table.shape).clone()

    def check_checkpoint(self, checkpoint: dict[str, Any], source: str = "the checkpoint") -> None:
        """Raise :class:`UserInputError` naming every size or choice in which ``checkpoint`` differs from this model."""
        saved = dict(checkpoint.get("hyper_parameters", {}))
        mine = dict(self.hparams)
        if "task" in saved:  # compare heads by what "auto" stood for
            saved["head"] = resolve_head(saved.get("head", "auto"), saved["task"])
            mine["head"] = resolve_head(mine["head"], mine["task"])
        if "backbone" in saved:  # checkpoints from before ensembles hold one member
            saved.setdefault("members", 1)
        if "quantiles" in saved:  # compare levels as lists of floats (a tuple default, a YAML list)
            saved["quantiles"] = [float(q) for q in saved["quantiles"]]
        keys: tuple[str, ...] = (
            "task",
            "backbone",
            "input_size",
            "sequence_length",
            "num_outputs",
            "hidden_size",
            "num_layers",
            "members",
            "readout",
            "bidirectional",
            "head",
            "series_embedding",
        )
        if mine["head"] in ("quantile", "gaussian"):
            keys += ("quantiles",)
        differ = [k for k in keys if k in saved and saved[k] != mine[k]]
        if differ:
            # Name the outputs as the data option that sets them (a forecast's horizon, say).
            label = {"num_outputs": HEADS[mine["head"]][1].outputs_setting()}
            pairs = ", ".join(f"{label.get(k, k)}: checkpoint {saved[k]!r} vs config {mine[k]!r}" for k in differ)
            raise UserInputError(
                f"{source} does not fit this model ({pairs}); pass the settings it was trained with, "
                "e.g. the config.yaml saved in its run folder"
            )
