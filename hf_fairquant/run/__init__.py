"""Run a YAML recipe end to end, as stages: the recipe (schema and parsing), its checks (one static
pass before anything loads, one after the data loads), model building, and the runner whose stages
(data, fp, export, audit, explain, mitigate, publish) are selectable. ``run`` returns a typed
:class:`~hf_fairquant.results.RunResult`.
"""

from .checks import check_data, check_output_dir, check_recipe
from .models import build_model, load_pretrained, load_recipe_data, resolve_task, train_fp_model
from .recipe import STAGES, CardSection, ExplainSection, ModelSection, RunRecipe, load_recipe
from .runner import dry_run, run, selected_stages, worst_recipe

__all__ = [
    "STAGES", "CardSection", "ExplainSection", "ModelSection", "RunRecipe", "build_model", "check_data",
    "check_output_dir", "check_recipe", "dry_run", "load_pretrained", "load_recipe", "load_recipe_data",
    "resolve_task", "run", "selected_stages", "train_fp_model", "worst_recipe",
]
