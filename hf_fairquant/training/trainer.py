"""FairQuantTrainer: mixed-precision QAT + group-balanced sampling + group-weighted loss.

A drop-in ``transformers.Trainer``. What it adds, and where:

- ``__init__``: fits a :class:`~hf_fairquant.GroupSpec` on the data, replaces the group
  column(s) by one int64 code column (kept through ``remove_unused_columns`` because it is a
  label name), validates everything, then asks the recipe's backend to prepare QAT
  (``backend.prepare_qat``: optimum-quanto modules calibrated on a group-stratified sample, or
  torchao ``QATConfig(base, step="prepare")`` — fake quantization, straight-through gradients);
- ``_get_train_sampler``: the group-balanced sampler;
- ``compute_loss``: pops the group codes before the forward, weights the per-example loss;
- checkpoints: a :class:`~hf_fairquant.training.state.FairQuantState` callback (transformers'
  ``ExportableState``) saves the recipe, the groups and the DRO weights in ``trainer_state.json``;
  ``train(resume_from_checkpoint=...)`` checks and restores them;
- ``log``: the Group-DRO weights as ``dro_weight/<group>``;
- ``train`` converts at the end (``backend.convert_qat``: quanto freezes, torchao
  ``step="convert"``); ``save_model`` then writes the folder :func:`~hf_fairquant.load_quantized`
  reads (for torchao also plain ``from_pretrained``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from .._atomic import atomic_write_text
from ..allocation import allocate_bits
from ..batching import LABELS, PIXEL_VALUES, ModelInputs, default_collator, has_transform, image_processor_of
from ..errors import FairQuantError
from ..groups import GroupSpec
from ..inputs import GroupedInputs
from ..metrics import group_compute_metrics
from ..quantization import QuantRecipe, calibration_batches, is_quantized, recipe_quantizer, save_quantized
from ..tasks import Task, task_of
from .arguments import FairQuantTrainingArguments
from .sampling import GroupBalancedSampler, cell_codes, sampling_weights
from .state import FairQuantState, load_checkpoint_weights, resolve_checkpoint
from .weighting import GroupDROWeights, StaticGroupWeights

#: Stored column holding the validated int64 labels of a lazily transformed dataset.
LABEL_CODES = "fairquant_labels"

class FairQuantTrainer(Trainer):
    """``Trainer`` with group-aware sampling, group-weighted loss and QAT (see module doc).

    The per-example loss is the task's (``task``, default: the task of the model's head — cross-
    entropy for a classifier, the mean next-token NLL of each text for a causal LM; with
    ``loss_unit="token"`` each text counts by its scored tokens), weighted per group and averaged per batch:
    ``loss_is_scaled_for_ga = False`` lets the Trainer scale it for gradient accumulation.
    Evaluation loss is the plain mean, so it compares across weighting schemes.
    """

    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        args: FairQuantTrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        compute_metrics: Any = None,
        task: Task | str | None = None,
        **kwargs: Any,
    ) -> None:
        args = args if args is not None else FairQuantTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, FairQuantTrainingArguments):
            raise FairQuantError(f"FairQuantTrainer needs FairQuantTrainingArguments, got {type(args).__name__}")
        if model is None:
            raise FairQuantError("FairQuantTrainer needs a model")
        if getattr(model, "config", None) is None:
            raise FairQuantError(
                f"FairQuantTrainer needs a transformers model with a `config`; {type(model).__name__} has none: wrap it "
                "in a PreTrainedModel or use an AutoModelFor… class"
            )
        self.task: Task = task_of(model, task)
        if not self.task.uses_class_labels and args.group_sampling in ("class_balanced", "group_class_balanced"):
            raise FairQuantError(
                f"group_sampling={args.group_sampling!r} balances class labels, and the task {self.task.name!r} has none "
                "(its targets are the text's own tokens): use group_sampling='group_balanced' (or 'none')"
            )
        if args.loss_unit == "token" and self.task.unit_name == "example":
            raise FairQuantError(
                f"loss_unit='token' weighs each example by its scored tokens; the task {self.task.name!r} scores one unit "
                "per example: leave loss_unit='example'"
            )
        if not self.task.trainable:
            raise FairQuantError(
                f"FairQuantTrainer cannot train a {self.task.name} model: that task audits and explains a model as it "
                "is (hf_fairquant.audit, hf_fairquant.explain)"
            )

        # ---- groups and references: validate and encode before any heavy work
        spec = GroupSpec(args.group_columns)
        evals = eval_dataset if isinstance(eval_dataset, dict) else ({"eval": eval_dataset} if eval_dataset is not None else {})
        batching = dict(data_collator=kwargs.get("data_collator"), processing_class=kwargs.get("processing_class"))
        labels: dict[str, Any] = {}
        for name, ds in [("train", train_dataset), *evals.items()]:
            if ds is not None:  # groups, references and the inputs the model takes: fail now
                labels[name] = GroupedInputs(model, ds, spec, task=self.task, split=name, **batching).references
        processing_class = kwargs.get("processing_class")
        splits = [d for d in [train_dataset, *evals.values()] if d is not None]
        if not splits:
            raise FairQuantError("FairQuantTrainer needs a train_dataset or an eval_dataset with a group column")
        self.group_spec = spec.fit(*splits)
        if train_dataset is not None and evals:
            self.group_spec.check_covered(train_dataset, evals)
        self._static_weights = self._make_weighting(args, train_dataset)
        self.quant_recipe: QuantRecipe | None = args.quantization_recipe
        if args.quantization_budget is not None:  # "auto:<budget>": allocate bits on the training data
            self.quant_recipe = self._allocate_recipe(model, args, train_dataset, **kwargs)
        plan = self.quant_recipe.plan(model) if self.quant_recipe is not None else None
        self._qat_plan, self._qat_backend, self._qat_converted = plan, None, False
        if plan is not None:
            self._qat_backend = recipe_quantizer(self.quant_recipe)
            self._qat_backend.check(model, plan)  # what the backend cannot do, before any work
            if self._qat_backend.needs_calibration(plan) and train_dataset is None:
                raise FairQuantError(f"QAT recipe {self.quant_recipe} quantizes activations: calibration needs a train_dataset")

        prepare = lambda ds, split: self._prepare_dataset(ds, args, model, labels.get(split), processing_class)  # noqa: E731
        train_dataset = prepare(train_dataset, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: prepare(v, k) for k, v in eval_dataset.items()}
        else:
            eval_dataset = prepare(eval_dataset, "eval")
        if compute_metrics is None:
            compute_metrics = group_compute_metrics(group_names=self.group_spec.names, task=self.task)
        # the task's collator adds what a batch learns from (a causal LM's labels: its own tokens)
        inner = kwargs.get("data_collator") or default_collator(processing_class)
        collator = self.task.training_collator(inner)
        if collator is not inner:
            kwargs["data_collator"] = collator
        if kwargs.get("preprocess_logits_for_metrics") is None and self.task.preprocess_logits_for_metrics() is not None:
            kwargs["preprocess_logits_for_metrics"] = self.task.preprocess_logits_for_metrics()
        state = FairQuantState(
            quantization=self.quant_recipe.to_dict() if self.quant_recipe is not None else None,
            group_columns=list(self.group_spec.columns), group_names=self.group_spec.names,
            dro_step_size=args.dro_step_size if args.group_weighting == "dro" else None,
        )
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), state]
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            compute_metrics=compute_metrics, **kwargs,
        )
        if plan is not None and not is_quantized(self.model):
            self._prepare_qat(plan)

    # ------------------------------------------------------------------ set-up
    @property
    def fairquant_state(self) -> FairQuantState:
        """The callback that carries the recipe, the groups and the DRO weights in checkpoints."""
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, FairQuantState))

    @property
    def qat_converted(self) -> bool | None:
        """None without a QAT recipe; False while the model only fake-quantizes (float weights:
        before or during ``train()``); True once ``train()`` converted it to integer weights."""
        return None if self._qat_plan is None else self._qat_converted

    @property
    def loss_weighting(self) -> StaticGroupWeights | GroupDROWeights | None:
        """The group weighting of the training loss (None: the plain mean)."""
        if self._static_weights is not None:
            return self._static_weights
        dro = self.fairquant_state.dro
        if dro is not None and dro.reduce is None and self.args.world_size > 1:
            dro.reduce = self._sum_over_processes  # every rank keeps identical weights
        return dro

    def _make_weighting(self, args: FairQuantTrainingArguments, train_dataset: Any) -> StaticGroupWeights | None:
        """Static per-group weights (Group-DRO weights live in :class:`FairQuantState`)."""
        scheme = args.group_weighting
        if scheme in ("none", "dro"):
            return None
        if train_dataset is None:
            raise FairQuantError(f"group_weighting={scheme!r} needs a train_dataset to count groups")
        weights = self.group_spec.weights(train_dataset, scheme)
        return StaticGroupWeights(torch.tensor([weights[n] for n in self.group_spec.names]))

    def _allocate_recipe(
        self, model: torch.nn.Module, args: FairQuantTrainingArguments, train_dataset: Any, **kwargs: Any
    ) -> QuantRecipe:
        """Per-layer weight bits from group sensitivity under the ``auto:<budget>`` budget."""
        if train_dataset is None:
            raise FairQuantError(f"quantization={args.quantization!r} allocates bits on the training data: pass a train_dataset")
        self.allocation = allocate_bits(
            model, train_dataset, self.group_spec, budget=args.quantization_budget,
            calibration_size=args.calibration_size, seed=args.seed,
            data_collator=kwargs.get("data_collator"), processing_class=kwargs.get("processing_class"),
        )
        return self.allocation.recipe

    def _prepare_dataset(
        self, dataset: Any, args: FairQuantTrainingArguments, model: torch.nn.Module, labels: Any, processing_class: Any
    ) -> Any:
        """Group codes in one int64 column ``args.group_code_column`` and int64 ``labels``.

        A materialised dataset gets stored columns (``label`` renamed, floats/bools/names cast).
        A lazily transformed one (``with_transform``), or one with a PIL image column (turned
        into ``pixel_values`` by the image processor), keeps its rows lazy: the codes become
        stored columns and the transform is wrapped to serve them, keeping only the model's
        inputs (Trainer's ``remove_unused_columns`` cannot see a transform's output)."""
        if dataset is None:
            return None
        codes = self.group_spec.encode(dataset)
        column = args.group_code_column
        inputs = ModelInputs(model, dataset, processing_class=processing_class)
        if has_transform(dataset) or inputs.image_column is not None:
            return self._wrap_transform(dataset, inputs, codes, labels, column)
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
        dataset = dataset.add_column(column, codes.tolist())
        stored = dataset.features.get(LABELS)
        if labels is None:  # the task's targets come with each batch (e.g. a language model's tokens)
            pass
        elif "label" in dataset.column_names or getattr(stored, "dtype", None) not in ("int64", "int32", "int16", "int8"):
            dataset = dataset.remove_columns([c for c in ("label", LABELS) if c in dataset.column_names])
            dataset = dataset.add_column(LABELS, np.asarray(labels, dtype=np.int64).tolist())
        return dataset.with_format("torch") if not dataset.format["type"] else dataset

    @staticmethod
    def _wrap_transform(dataset: Any, inputs: ModelInputs, codes: np.ndarray, labels: Any, column: str) -> Any:
        fmt = dataset.format
        inner = fmt["format_kwargs"].get("transform") if fmt["type"] == "custom" else None
        inner_columns = list(fmt["columns"] or dataset.column_names)
        base = dataset.with_format(None)
        base = base.remove_columns([c for c in (column, LABEL_CODES) if c in base.column_names])
        base = base.add_column(column, codes.tolist())
        if labels is not None:
            base = base.add_column(LABEL_CODES, np.asarray(labels, dtype=np.int64).tolist())
        keep = [n for n in inputs.input_names if n != PIXEL_VALUES or inputs.image_column is None]
        image_column, processor = inputs.image_column, image_processor_of(inputs.processing_class)

        def transform(batch: dict) -> dict:
            served = inner({k: batch[k] for k in inner_columns}) if inner is not None else batch
            out = {k: served[k] for k in keep if k in served}
            if image_column is not None:
                out[PIXEL_VALUES] = processor(list(batch[image_column]), return_tensors="pt")[PIXEL_VALUES]
            if labels is not None:
                out[LABELS] = batch[LABEL_CODES]
            out[column] = batch[column]
            return out

        return base.with_transform(transform)

    def _remove_unused_columns(self, dataset: Any, description: str | None = None) -> Any:
        """A wrapped transform serves only the model's inputs already (see :meth:`_prepare_dataset`)."""
        if has_transform(dataset):
            return dataset
        return super()._remove_unused_columns(dataset, description)

    def _prepare_qat(self, plan: dict) -> None:
        """The backend swaps in fake-quantizing modules; static activation ranges (quanto) are
        calibrated on a group-stratified sample and then follow the training batches."""
        batches = []
        if self._qat_backend.needs_calibration(plan):
            code_spec = GroupSpec(self.args.group_code_column)
            device = next(self.model.parameters()).device
            batches = [
                {k: v.to(device) for k, v in b.items()}
                for b in calibration_batches(
                    self.model, self.train_dataset, self.args.calibration_size, code_spec,
                    batch_size=self.args.per_device_train_batch_size, seed=self.args.seed,
                    data_collator=self.data_collator, processing_class=self.processing_class,
                )
            ]
        # ranges updated every n-th step with momentum 0.9**n: the same time constant as every step
        self._range_tracker = self._qat_backend.prepare_qat(
            self.model, plan, batches, range_momentum=0.9**self.args.range_update_steps
        )

    def _sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor.to(self.args.device), reduction="sum").cpu()

    # ------------------------------------------------------------------ sampling
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        # A private override, kept on purpose: transformers 5.24 has no public sampler hook —
        # get_train_dataloader passes sampler_fn=self._get_train_sampler to its private
        # _get_dataloader, and overriding get_train_dataloader whole would re-implement
        # accelerate's dataloader preparation. Checked against transformers 5.24.
        mode = self.args.group_sampling
        if mode == "none":
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        groups = np.asarray(dataset.with_format("numpy")[self.args.group_code_column][:])
        labels = None
        if mode != "group_balanced":  # class cells (a task with class labels: checked in __init__)
            stored = LABEL_CODES if LABEL_CODES in dataset.column_names else LABELS
            labels = np.asarray(dataset.with_format("numpy")[stored][:])
        probabilities = sampling_weights(cell_codes(mode, groups, labels), self.args.sampling_power)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return GroupBalancedSampler(probabilities, len(dataset), seed=seed)

    # ------------------------------------------------------------------ loss
    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        tracker = getattr(self, "_range_tracker", None)
        if tracker is not None:  # activation ranges follow every n-th optimizer step (global_step: resumable)
            tracker.active = self.state.global_step % self.args.range_update_steps == 0
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        groups = inputs.pop(self.args.group_code_column)
        targets = self.task.targets(inputs, inputs.pop(LABELS, None))
        outputs = model(**inputs)
        losses = self.task.loss(outputs, targets)
        units = self.task.units(targets).to(losses.dtype) if self.args.loss_unit == "token" else None
        if self.loss_weighting is None or not model.training:
            loss = losses.mean() if units is None else (losses * units).sum() / units.sum().clamp(min=1)
        else:
            loss = self.loss_weighting(losses, groups, units)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the Group-DRO weights (``dro_weight/<group>``) to every training log."""
        dro = self.fairquant_state.dro
        if dro is not None and "loss" in logs:
            logs = {**logs, **{f"dro_weight/{g}": float(q) for g, q in zip(self.group_spec.names, dro.q.tolist())}}
        super().log(logs, start_time)

    # ------------------------------------------------------------------ resuming
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        # A private override, kept on purpose: transformers 5.25 loads a checkpoint's weights with
        # load_state_dict(strict=False) and no key conversion, so a ViT (saved under legacy key names)
        # resumed with 95 of 96 tensors at their initial values and only a log line. No public hook
        # reaches that load. Checked against transformers 5.25; FSDP/DeepSpeed keep their own path.
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or not load_checkpoint_weights(
            model if model is not None else self.model, resume_from_checkpoint
        ):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        # The same load for load_best_model_at_end (same private path in transformers 5.25).
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or not load_checkpoint_weights(
            self.model, self.state.best_model_checkpoint
        ):
            super()._load_best_model()

    # ------------------------------------------------------------------ QAT end and saving
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """Train, then (QAT) convert: the model holds integer weights from here on.

        Resuming checks that the checkpoint was made with this recipe and these groups and
        restores the Group-DRO weights (from its ``trainer_state.json``) before any step."""
        checkpoint = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if checkpoint is not None:
            self.fairquant_state.restore(checkpoint)
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        if self._qat_plan is not None and not self._qat_converted:
            if getattr(self, "_range_tracker", None) is not None:
                self._range_tracker.remove()
            self.model = self._qat_backend.convert_qat(self.model, self._qat_plan)
            self._qat_converted = True
        return output

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """A converted QAT model is written by :func:`save_quantized` (reload: ``load_quantized``;
        a torchao one also with plain ``from_pretrained``).

        A user's call (not a checkpoint) also writes ``README.md``: the fairness model card
        (:func:`hf_fairquant.training.card.trainer_card`), so the folder is what ``hf-fairquant push`` takes.
        Before ``train()`` converted a QAT model there is no quantized model to save: a user's call
        is refused (the folder would hold float weights that ``load_quantized`` cannot read)."""
        if not _internal_call:
            self._check_converted()
        if self._qat_converted:
            output_dir = output_dir or self.args.output_dir
            if self.args.should_save:
                save_quantized(self.model, output_dir, recipe=self.quant_recipe)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(output_dir)
        else:
            super().save_model(output_dir, _internal_call)
        if not _internal_call:
            self._write_card(output_dir or self.args.output_dir)

    def _check_converted(self) -> None:
        if self.qat_converted is False:
            raise FairQuantError(
                f"save_model(): the model is prepared for QAT with {self.quant_recipe} (fake-quantized, float weights) "
                "but not converted: train() converts it at its end, then save_model() writes the quantized model "
                "(load_quantized reads it). To keep the full-precision model, save it before building the trainer "
                "(model.save_pretrained)"
            )

    def create_model_card(self, **kwargs: Any) -> None:
        """The fairness card instead of transformers' generic one (``push_to_hub`` calls this);
        takes ``Trainer.create_model_card``'s keywords (``dataset_tags``, ``license``, …)."""
        self._write_card(self.args.output_dir, **kwargs)

    def _write_card(self, output_dir: str, **kwargs: Any) -> None:
        if not self.is_world_process_zero():
            return
        from .card import trainer_card

        card = trainer_card(self, **kwargs)
        atomic_write_text(os.path.join(output_dir, "README.md"), str(card))

