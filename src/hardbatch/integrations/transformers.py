"""Any hardbatch policy inside a Hugging Face ``transformers.Trainer``: a Trainer subclass, ``HardBatchTrainer``.

Needs ``pip install 'hardbatch[transformers]'``; the core package never imports this module. See
``examples/hf_trainer.py`` and docs/guides/integrations.md "Hugging Face Trainer".

The selection unit is one optimizer step's global batch, B = ``per_device_train_batch_size`` ×
``gradient_accumulation_steps`` × world size: the sampler cuts the training set into N = ⌊n / B⌋ fixed batches and
its budget is ``num_train_epochs`` epochs of N steps. The Trainer hooks it overrides, and why:

- ``get_train_dataloader``: each item is this rank's contiguous share of the next global batch the policy planned
  (``distributed.LocalSlices``), collated in one piece; one pass of the loader is one pass of the policy (a Trainer
  "epoch" is a round). The loader is not handed to ``accelerator.prepare``, whose ``BatchSamplerShard`` would give
  rank r every W-th batch instead (docs/guides/integrations.md "Accelerate"), and it never draws from the global RNG
  (a resumed run's dropout masks are the uninterrupted run's).
- ``get_batch_samples`` (where the Trainer collects one optimizer step's micro-batches): loads that share, runs
  hardbatch's step core on it (``hardbatch.step.select``: the policy's no-grad scoring pass, keep-masks, weights,
  the cost meter) and splits the rows it keeps into the step's ``gradient_accumulation_steps`` micro-batches. A
  scoring-only step, or one whose batch the policy keeps none of, is recorded there and takes no optimizer step.
- ``compute_loss``: the micro-batch's part of the step's loss, ``loss_fn(outputs, batch)`` per sample, so that the
  accumulated gradient is that of the whole (kept) global batch's mean; after the last micro-batch of a step it
  records the step with the sampler (``hardbatch.step.record``: losses combined across ranks).
- ``_save`` / ``train``: the selection state (the sampler with its cost meter, the trace, the selection settings)
  goes into every checkpoint folder as ``hardbatch_state.pt``, written atomically during the Trainer's save (before
  its trainer_state.json); ``train(resume_from_checkpoint=...)`` reads it back before the Trainer resumes, and
  refuses other selection settings in one line. A checkpoint that a kill or a full disk left incomplete, or whose
  state file is damaged, is refused in one line naming the file and the checkpoint to pass instead;
  ``resume_from_checkpoint=True`` passes over such checkpoints to the newest complete one, with a warning
  (``transformers_checkpoints``).
- ``create_scheduler``: the Trainer's learning-rate schedule, read at the selection's progress (it ends when a
  pruning policy's passes end, before the budget's step count).
- ``log``: every log line carries the cost counters as ``hardbatch/<counter>``; ``train_seconds`` and ``cpu_seconds``
  run from a step's loading to its optimizer step (a callback stops them), so logging, evaluation and checkpoints
  are left out.

Under a process group (torchrun, ``accelerate launch``) the trainer registers ``distributed.shutdown`` to run at
interpreter exit: scripts call nothing.
"""

from __future__ import annotations

import atexit
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from hardbatch import batches, distributed
from hardbatch import step as step_core
from hardbatch.cost import CostMeter
from hardbatch.errors import MissingExtra, UsageError
from hardbatch.integrations.transformers_checkpoints import (
    STATE_FILE,
    STATE_FORMAT,
    STATE_MARK,
    explicit_checkpoint_state,
    newest_complete_checkpoint,
    write_state,
)
from hardbatch.losses import LossFn, cross_entropy, token_lm
from hardbatch.policies import Policy
from hardbatch.sampler import HardBatchSampler

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import has_length
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtra("hardbatch.integrations.transformers", "transformers", "transformers") from None

TRAINER_PARAMS = frozenset(inspect.signature(Trainer.__init__).parameters) - {"self"}


_shutdown_registered = False


def _shutdown_at_exit() -> None:
    """Under a process group (torchrun, ``accelerate launch``: TrainingArguments joins it), register
    ``hardbatch.distributed.shutdown`` to run at interpreter exit, once per process: it frees the group and its gloo
    worker threads while the interpreter is whole, which the Trainer's and Accelerate's reference cycles would
    otherwise keep alive into finalization, where one can abort the process after all its work (see
    ``distributed.shutdown``). Not at the end of ``train()``: a script may train again, evaluate or save after it,
    all over the same group. The user's script calls nothing."""
    global _shutdown_registered
    if distributed.active() and not _shutdown_registered:
        atexit.register(distributed.shutdown)
        _shutdown_registered = True


def seq2seq_forward(model: torch.nn.Module, batch: Any) -> Any:
    """An encoder-decoder model's forward (T5, BART, Marian, ...) on a dict batch: ``model(**batch)`` without its
    labels (the loss is hardbatch's per-sample ``loss_fn``), with ``decoder_input_ids`` made from ``batch["labels"]``
    when the batch has none, as the model makes them when it is given labels (its
    ``prepare_decoder_input_ids_from_labels``: the labels shifted right behind the decoder's start token, -100 read
    as padding). Returns the model's outputs: ``logits`` (b, T, V) line up with the labels (b, T), so the loss is
    ``hardbatch.losses.token_lm(shift=False)``. A model without that method is given the labels (it then also
    computes its own loss, unused)."""
    if (
        not isinstance(batch, Mapping)
        or batches.LABELS not in batch
        or "decoder_input_ids" in batch
        or "decoder_inputs_embeds" in batch
    ):
        return batches.forward(model, batch)
    prepare = getattr(distributed.unwrap(model), "prepare_decoder_input_ids_from_labels", None)
    if prepare is None:
        return model(**{key: value for key, value in batch.items() if not key.startswith("__")})
    return batches.forward(model, {**batch, "decoder_input_ids": prepare(labels=batch[batches.LABELS])})


# The default loss of an encoder-decoder model: each target sequence's mean token cross-entropy (labels -100 left out).
SEQ2SEQ_LOSS = token_lm(shift=False)


class _Passes:
    """The training loader's batch sampler: this rank's share of each global batch of one pass of the policy.

    It has no length on purpose: a pass's length changes from round to round, and a loader without one makes the
    Trainer run its epochs up to ``max_steps`` (the budget) instead of a step count taken from the first round.
    """

    def __init__(self, sampler: HardBatchSampler):
        self.shares = distributed.LocalSlices(sampler)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.shares)


class _PassLoader(DataLoader):
    """The training DataLoader, whose iterators draw their seed from their own generator, seeded anew for each pass
    from ``seed`` and the sampler's position (steps recorded, round): an interrupted run resumed at the start of a
    pass gives its workers the seeds the uninterrupted run gave them, and no pass draws from the global RNG."""

    def __init__(self, sampler: HardBatchSampler, seed: int, *args: Any, **kwargs: Any):
        super().__init__(*args, **{**kwargs, "generator": torch.Generator()})
        self.hardbatch_sampler, self.seed = sampler, seed

    def __iter__(self) -> Any:  # DataLoader's iterator
        position = (self.seed, self.hardbatch_sampler.steps, self.hardbatch_sampler.round)
        self.generator.manual_seed(hash(position) % 2**63)
        return super().__iter__()


@dataclass
class _Accumulation:
    """One optimizer step in progress: what ``select`` chose, its micro-batches, and what they have trained."""

    chosen: step_core.Chosen
    micro: list[step_core.Chosen]  # one per micro-batch: its rows of ``chosen.batch`` (and their weights)
    shares: list[float]  # each micro-batch's fraction of ``chosen.batch``'s rows (0: a padding row at weight 0)
    done: int = 0
    loss: torch.Tensor | float = 0.0  # this rank's weighted mean so far
    losses: list[torch.Tensor] = field(default_factory=list)  # per-sample losses of the real rows so far


def _split(chosen: step_core.Chosen, parts: int) -> _Accumulation:
    """``chosen``'s rows cut into ``parts`` consecutive micro-batches (as equal as can be).

    The Trainer steps the optimizer after exactly ``gradient_accumulation_steps`` micro-batches, so there are always
    ``parts`` of them: when fewer rows are kept than that (Selective Backprop), the empty ones train the first row at
    weight 0 (nothing, but every rank still joins DDP's gradient all-reduce).
    """
    rows = batches.batch_size(chosen.batch)
    micro, shares = [], []
    for piece in torch.arange(rows).tensor_split(parts):
        share = len(piece) / rows
        if share == 0:
            piece = torch.zeros(1, dtype=torch.long)
        weights = None if chosen.weights is None else chosen.weights[piece.to(chosen.weights.device)]
        if share == 0:
            weights = torch.zeros(1, device=batches.device_of(chosen.batch))
        micro.append(
            step_core.Chosen(batches.take(chosen.batch, piece), weights, chosen.scale, len(piece), chosen.total)
        )
        shares.append(share)
    return _Accumulation(chosen, micro, shares)


def _at_progress(factor: Callable[..., float], sampler: HardBatchSampler, steps: int) -> Callable[[int], float]:
    """A ``LambdaLR`` factor of the step count, read at the step the selection's progress stands for: the sampler's
    step count for policies that count their budget in steps (exactly the scheduler's own count), else its progress
    times the budget's ``steps`` (a fraction of a step, which the Trainer's schedules take). A plain function: a
    ``LambdaLR`` saves the attributes of callable objects in its state (the sampler, here), not of functions."""

    def at_progress(_step: int) -> float:
        return factor(sampler.progress * steps if sampler.policy.epoch_is_round else sampler.steps)

    return at_progress


class _Clocks(TrainerCallback):
    """Times training for the cost meter (``train_seconds``, ``cpu_seconds``): ``get_batch_samples`` starts the
    clocks as a step begins loading, a step's end (``on_step_end``, after the optimizer step) and a pass's end stop
    them; what the Trainer does in between (logging, evaluation, checkpoints) is not counted."""

    def __init__(self, trainer: HardBatchTrainer):
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.meter.discard()  # a clock left running by a train() that raised

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.meter.stop()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.meter.stop()


class _ScoringPasses(TrainerCallback):
    """Keeps training through an epoch that trained nothing: a pass of no-grad scoring steps (``rescore``).

    The Trainer ends training after an epoch without a micro-batch (it takes that for the end of the data);
    here that epoch was one pass of the policy, and the budget is not spent.
    """

    def __init__(self, trainer: HardBatchTrainer):
        self.trainer = trainer

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.trainer._trained_in_pass and not self.trainer.sampler.done:
            control.should_training_stop = False
        self.trainer._trained_in_pass = False


class HardBatchTrainer(Trainer):
    """A ``transformers.Trainer`` that trains the batches a hardbatch policy chooses (by default the paper's rule).

    ``HardBatchTrainer(model=..., args=TrainingArguments(...), train_dataset=..., policy="hardbatch", delta=0.5,
    loss_fn=hardbatch.losses.token_lm())``: every Trainer argument as usual; ``policy``, ``delta`` and the policy's
    hyper-parameters by their names (``beta=2``, ``prune_ratio=0.5``, ...) as for ``HardBatchSampler``, or a policy
    object (``policy=hardbatch.policies.InfoBatch(prune_ratio=0.5)``); ``loss_fn(outputs, batch)`` returns one loss
    per sample, shape (b,); ``forward(model, batch)`` runs the model. Defaults: cross-entropy of ``outputs.logits``
    (b, C) against ``batch["labels"]`` and ``model(**batch)`` without its labels; for an encoder-decoder model
    (``model.config.is_encoder_decoder``: T5, BART, ...) each target sequence's mean token cross-entropy over its
    labels that are not -100 (``hardbatch.losses.token_lm(shift=False)``) and ``seq2seq_forward`` (decoder inputs
    built from the labels). A causal LM needs ``loss_fn=hardbatch.losses.token_lm()``. Or pass a ready ``sampler``
    (a HardBatchSampler whose batch is the global batch B) instead of ``policy``/``delta``/parameters.

    The budget is ``args.num_train_epochs`` (a whole number) epochs of N optimizer steps; ``args.max_steps`` is set
    to that budget (an upper bound for the policies whose epoch is a pass, which stop when their passes are done)
    and must be left unset (or equal to it). ``args.ignore_data_skip`` is set: on resume the sampler continues from
    its own state, where the Trainer's skipping of batches would drop some. The partition is a seeded shuffle
    (``args.seed``) unless ``shuffle_partition=False``.

    After training, ``trainer.sampler`` holds the selection state, ``trainer.meter`` the cost, ``trainer.trace``
    one row per optimizer step (step, round, batch, loss).
    """

    # compute_loss returns each micro-batch's share of the step's mean times the number of micro-batches; the
    # Trainer divides it by that number (as it does for any loss not normalised by ``num_items_in_batch``).
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        policy: str | Policy = "hardbatch",
        delta: float | None = None,
        sampler: HardBatchSampler | None = None,
        loss_fn: LossFn | None = None,
        forward: batches.Forward | None = None,
        shuffle_partition: bool = True,
        **kwargs: Any,
    ):
        params = {k: kwargs.pop(k) for k in list(kwargs) if k not in TRAINER_PARAMS}
        super().__init__(*args, **kwargs)
        seq2seq = bool(getattr(getattr(self.model, "config", None), "is_encoder_decoder", False))
        self.loss_fn = loss_fn or (SEQ2SEQ_LOSS if seq2seq else cross_entropy)
        self.forward = forward or (seq2seq_forward if seq2seq else batches.forward)
        self.trace: list[dict] = []
        self._accumulation: _Accumulation | None = None
        self._trained_in_pass = False
        self.add_callback(_ScoringPasses(self))
        self.add_callback(_Clocks(self))
        _shutdown_at_exit()
        self.sampler = self._sampler(sampler, policy, delta, shuffle_partition, params)
        if self.args.max_steps > 0 and self.args.max_steps != self.sampler.total_steps:
            raise UsageError(
                f"HardBatchTrainer: the budget is num_train_epochs epochs of N optimizer steps "
                f"({self.sampler.total_steps}); leave max_steps unset (got {self.args.max_steps})"
            )
        self.args.max_steps = self.sampler.total_steps
        self.args.ignore_data_skip = True

    @property
    def meter(self) -> CostMeter:
        """What training spent (``sampler.meter``, saved with the sampler's state)."""
        return self.sampler.meter

    def _sampler(
        self,
        sampler: HardBatchSampler | None,
        policy: str | Policy,
        delta: float | None,
        shuffle_partition: bool,
        params: dict[str, Any],
    ) -> HardBatchSampler:
        """The given ``sampler`` (checked against the global batch) or a new one from the policy and its parameters."""
        args = self.args
        global_batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        if sampler is not None:
            if params or not (isinstance(policy, str) and policy == "hardbatch") or delta is not None:
                raise UsageError("HardBatchTrainer: pass either sampler= or policy=/delta=/policy parameters, not both")
            if sampler.partition.shape[1] != global_batch:
                raise UsageError(
                    f"HardBatchTrainer: the sampler's batch is {sampler.partition.shape[1]}, the global "
                    f"batch is {global_batch} (per_device_train_batch_size × "
                    f"gradient_accumulation_steps × world size); make them equal"
                )
            return sampler
        epochs = args.num_train_epochs
        if epochs != int(epochs) or epochs < 1:
            raise UsageError(
                f"HardBatchTrainer: num_train_epochs must be a whole number >= 1 (epochs of N optimizer "
                f"steps), got {epochs}"
            )
        if self.train_dataset is None or not has_length(self.train_dataset):
            raise UsageError(
                "HardBatchTrainer: training requires a train_dataset with a length (a map-style data "
                "set, which the fixed batches index), not an iterable one"
            )
        n = len(self.train_dataset)
        if n < global_batch:
            raise UsageError(
                f"HardBatchTrainer: the training set ({n} samples) is smaller than one global batch ({global_batch})"
            )
        return HardBatchSampler(
            n,
            global_batch,
            delta=delta,
            epochs=int(epochs),
            policy=policy,
            shuffle_partition=shuffle_partition,
            seed=args.seed,
            **params,
        )

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The Trainer's learning-rate schedule (``args.lr_scheduler_type``, warm-up included), made to follow the
        selection's progress (``sampler.progress``, in [0, 1]) over the budget's ``num_training_steps`` instead of
        the step count, as ``hardbatch train``'s schedule does: a policy whose epoch is a pass (infobatch, seta, ies,
        selective-backprop) may end in fewer optimizer steps than the budget, and its schedule still reaches its
        end at its last step. For the others the progress is the step count, and the schedule is the Trainer's.
        Constant schedules are unaffected; a scheduler passed to the Trainer (``optimizers=``) and schedules that are
        no ``LambdaLR`` (reduce_lr_on_plateau, greedy) are left as they are."""
        given = self.lr_scheduler
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if given is None and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            scheduler.lr_lambdas = [
                _at_progress(factor, self.sampler, num_training_steps) for factor in scheduler.lr_lambdas
            ]
        return scheduler

    # -- the data -------------------------------------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """A loader whose items are this rank's contiguous share of each global batch the policy planned.

        The Trainer's own loader lends its data set and collator (after its removal of unused columns). The loader
        draws its worker seeds from a generator of its own, never from the global RNG that dropout uses: the Trainer
        restores that RNG from a checkpoint before it starts the loader, so a draw there would shift every later
        dropout mask of a resumed run (see ``_PassLoader``).
        """
        own = super().get_train_dataloader()
        args = self.args
        workers = args.dataloader_num_workers
        extra = (
            {
                "prefetch_factor": args.dataloader_prefetch_factor,
                "multiprocessing_context": args.dataloader_multiprocessing_context,
            }
            if workers
            else {}
        )
        return _PassLoader(
            self.sampler,
            args.seed,
            own.dataset,
            batch_sampler=_Passes(self.sampler),
            collate_fn=own.collate_fn,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            worker_init_fn=own.worker_init_fn,
            **extra,
        )

    def get_batch_samples(
        self, epoch_iterator: Iterator[Any], num_batches: int, *args: Any, **kwargs: Any
    ) -> tuple[list[Any], None]:
        """The next optimizer step's micro-batches, and None for ``num_items_in_batch`` (see ``compute_loss``).

        Steps that train nothing (a scoring pass, a batch the policy keeps none of) are recorded and passed over.
        At the end of a pass the Trainer's epoch ends, and training once the sampler's budget is spent.
        """
        parts = self.args.gradient_accumulation_steps
        self.meter.start()  # stopped at the step's end (``_Clocks``) or the pass's, below
        while not self.sampler.done:
            try:
                share = next(epoch_iterator)
            except StopIteration:
                break
            share = batches.to_device(share, self.args.device)
            chosen = step_core.select(
                self.sampler,
                self.accelerator.unwrap_model(self.model),
                share,
                loss_fn=self.loss_fn,
                forward=self.forward,
            )
            if chosen is not None:
                self._trained_in_pass = True
                self._accumulation = _split(chosen, parts)
                return [micro.batch for micro in self._accumulation.micro], None
        self.meter.stop()
        self.control.should_epoch_stop = True
        self.control.should_training_stop = self.control.should_training_stop or self.sampler.done
        return [], None

    # -- the step -------------------------------------------------------------------------------------------------

    def compute_loss(
        self, model: torch.nn.Module, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """The micro-batch's part of the step's loss (training), or the mean ``loss_fn`` (evaluation).

        Training: ``loss_fn`` per sample, weighted as the policy says, over the step's whole kept batch: the
        micro-batch's mean times its fraction of the rows, so the accumulated gradient is that of one big batch (the
        Trainer's ``num_items_in_batch``, a token count for the model's own loss, is not used: hardbatch's loss is a
        mean over samples). After the step's last micro-batch, the step is recorded with the sampler.
        """
        accumulation = self._accumulation
        if not model.training or accumulation is None:
            outputs = self.forward(model, inputs)
            loss = self.loss_fn(outputs, inputs).mean()
            return (loss, outputs) if return_outputs else loss
        micro, share = accumulation.micro[accumulation.done], accumulation.shares[accumulation.done]
        outputs = self.forward(model, inputs)
        losses = self.loss_fn(outputs, inputs)
        loss = step_core.weighted_loss(micro, losses) * share
        accumulation.loss = accumulation.loss + loss.detach()
        if share:
            accumulation.losses.append(losses.detach())
        accumulation.done += 1
        if accumulation.done == len(accumulation.micro):
            self._record(accumulation)
        loss = loss * (accumulation.chosen.scale * len(accumulation.micro))
        return (loss, outputs) if return_outputs else loss

    def _record(self, accumulation: _Accumulation) -> None:
        """Record a finished step with the sampler (losses combined across ranks) and append it to the trace."""
        self._accumulation = None
        assert isinstance(accumulation.loss, torch.Tensor)  # a sum of the micro-batches' losses, at least one
        loss = step_core.record(self.sampler, accumulation.chosen, accumulation.loss, torch.cat(accumulation.losses))
        last = self.sampler.last
        assert last is not None  # the step just recorded
        self.trace.append({"step": self.sampler.steps, "round": last.round, "batch": last.batch, "loss": loss})

    # -- state and logs -------------------------------------------------------------------------------------------

    def selection_settings(self) -> dict:
        """What the selection state is a state of: the policy, its hyper-parameters (δ among them), the n samples,
        the N fixed batches of B, the budget in epochs and the seed. A checkpoint holds them; resuming with other
        values is refused."""
        sampler = self.sampler
        return {
            "policy": sampler.policy.name,
            **sampler.policy.hyper_parameters(),
            "samples": sampler.num_samples,
            "batches": sampler.num_batches,
            "batch_size": int(sampler.partition.shape[1]),
            "epochs": sampler.epochs,
            "seed": sampler.seed,
        }

    def selection_state(self) -> dict:
        """The sampler's state (its cost meter included), the trace and the settings they are of: what a checkpoint
        needs to continue exactly."""
        return {
            STATE_MARK: STATE_FORMAT,
            "settings": self.selection_settings(),
            "sampler": self.sampler.state_dict(),
            "trace": self.trace_rows(),
        }

    def load_selection_state(self, state: dict, source: str = "the checkpoint") -> None:
        """Continue from ``state`` (``selection_state``), read from ``source``; UsageError naming ``source`` if it is
        of other selection settings (each named, with both values) or of another partition."""
        saved, given = state["settings"], self.selection_settings()
        differing = [name for name in {**saved, **given} if saved.get(name) != given.get(name)]
        if differing:
            detail = ", ".join(f"{name} saved {saved.get(name)!r} but given {given.get(name)!r}" for name in differing)
            raise UsageError(
                f"HardBatchTrainer: {source} holds a run with other selection settings: {detail}; pass "
                f"the saved values to continue it, or train in another output_dir"
            )
        try:
            self.sampler.load_state_dict(state["sampler"])
        except UsageError as e:
            raise UsageError(f"HardBatchTrainer: cannot resume from {source}: {e}") from None
        self.trace = [dict(row) for row in state["trace"]]

    def trace_rows(self) -> list[dict]:
        """The trace with each loss as a float (one device sync for all of them)."""
        losses = (
            torch.stack([torch.as_tensor(r["loss"], dtype=torch.float64).cpu() for r in self.trace]).tolist()
            if self.trace
            else []
        )
        return [{**row, "loss": loss} for row, loss in zip(self.trace, losses, strict=True)]

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            folder = output_dir or self.args.output_dir
            assert folder is not None  # the Trainer saves to one
            write_state(os.path.join(folder, STATE_FILE), self.selection_state())

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; resuming, the checkpoint must be complete (see ``checkpoint_state``), and its selection
        state is loaded first. ``resume_from_checkpoint=True`` takes the newest complete checkpoint of
        ``args.output_dir``, with a warning naming each newer one that a kill or a full disk left incomplete."""
        _shutdown_at_exit()  # a process group created after the Trainer
        if resume_from_checkpoint is True:
            if self.args.output_dir is None:
                raise UsageError("resume_from_checkpoint=True looks in args.output_dir, which is not set")
            resume_from_checkpoint, state = newest_complete_checkpoint(self.args.output_dir)
        elif resume_from_checkpoint:
            state = explicit_checkpoint_state(resume_from_checkpoint)
        if resume_from_checkpoint:
            self.load_selection_state(state, resume_from_checkpoint)
        return super().train(resume_from_checkpoint or None, *args, **kwargs)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """``Trainer.log`` with the cost counters (docs/guides/command-line.md "Cost") as ``hardbatch/<counter>``:
        ``train_seconds`` and ``cpu_seconds`` count training only (loading, choosing, forward, backward, optimizer
        step), where the Trainer's ``train_runtime`` includes evaluation and checkpoints."""
        cost = {f"hardbatch/{name}": value for name, value in self.meter.state_dict().items()}
        cost["hardbatch/epoch"] = self.sampler.epoch  # epochs of N steps finished (the Trainer's epochs are rounds)
        super().log({**logs, **cost}, *args, **kwargs)
