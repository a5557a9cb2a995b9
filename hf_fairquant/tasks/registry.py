"""The task registry: every module of this package registers one :class:`~.base.Task` by name.

Adding a task is adding one module here that calls :func:`register_task`; the registry finds
the modules itself (nothing else names a task), imported on first use.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from ..errors import FairQuantError
from .base import Task, head_kind

_REGISTRY: dict[str, Task] = {}
_INFRASTRUCTURE = {"base", "registry"}
_discovered = {"done": False}


def register_task(task: Task) -> Task:
    """Make ``task`` available by ``task.name`` (returns it)."""
    if not task.name:
        raise FairQuantError(f"{type(task).__name__} has no name: set Task.name")
    _REGISTRY[task.name] = task
    return task


def _discover() -> None:
    if _discovered["done"]:
        return
    _discovered["done"] = True
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def available_tasks() -> list[str]:
    """Names :func:`get_task` accepts."""
    _discover()
    return sorted(_REGISTRY)


def get_task(task: "str | Task") -> Task:
    """The registered task called ``task`` (a Task is returned as it is)."""
    if isinstance(task, Task):
        return task
    _discover()
    try:
        return _REGISTRY[task]
    except (KeyError, TypeError):
        raise FairQuantError(f"unknown task {task!r}; allowed: {available_tasks()}") from None


def task_for_architecture(architecture: str) -> Task:
    """The task a checkpoint of transformers class ``architecture`` belongs to (its head); a task
    that is only ever named explicitly (``selected_by_head = False``) is never chosen here."""
    _discover()
    found = [t for t in _REGISTRY.values() if t.selected_by_head and t.handles(architecture)]
    if not found:
        kind = head_kind(architecture)
        what = f" (a {kind or 'base, headless'} model)" if kind is not None else ""
        raise FairQuantError(
            f"no task handles a {architecture}{what}: the registered tasks are {available_tasks()} "
            "(a model's head decides its task: e.g. …ForSequenceClassification → classification)"
        )
    return found[0]


def task_of(model: Any, task: "str | Task | None" = None) -> Task:
    """``task`` (checked against the model's head), else the task of ``model``'s class; a model
    without a transformers config (a plain ``nn.Module``) or of a class transformers does not list
    (a custom model) defaults to classification, whose checks then apply to its outputs."""
    if task is not None:
        chosen = get_task(task)
    elif getattr(model, "config", None) is None or head_kind(type(model).__name__) is None:
        chosen = get_task("classification")  # a plain or custom module: what its outputs are is checked on use
    else:
        chosen = task_for_architecture(type(model).__name__)
    chosen.check_model(model)
    return chosen
