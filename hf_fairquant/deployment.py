"""Simulated vs deployed: does the quantization simulation predict what the shipped artifact does?

The audit evaluates a recipe twice — simulated (quanto/torchao modules in torch) and deployed
(the ONNX Runtime int8/int4 model that ships) — against the same FP reference. :func:`compare`
then puts the two side by side, per group: how many predictions differ between them (flip
rate), each group's accuracy difference (deployed − simulated, with a paired bootstrap interval),
whether the deployed accuracy lies inside the simulated model's interval, and the two disparities
vs FP. The math is the ``group_disparity`` metric's, with the simulation as the reference.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._format import markdown_table, pct, signed_pct

DEPLOYED_SUFFIX = " ONNX"


def deployed_name(simulated: str) -> str:
    """The audit row name of the deployed model of ``simulated`` (``"W8A8"`` → ``"W8A8 ONNX"``)."""
    return f"{simulated}{DEPLOYED_SUFFIX}"


def compare(
    metric: Any,
    simulated_predictions: np.ndarray,
    deployed_predictions: np.ndarray,
    simulated_metrics: Mapping[str, Any],
    deployed_metrics: Mapping[str, Any],
    *,
    references: np.ndarray,
    groups: Any,
    **options: Any,
) -> dict[str, Any]:
    """The simulated-vs-deployed comparison of one recipe (plain JSON types); ``options``: the
    metric's n_boot, confidence_level, seed, min_group_size, p_adjust."""
    paired = metric.compute(
        predictions=deployed_predictions, reference_predictions=simulated_predictions,
        references=references, groups=groups, **options,
    )
    names = list(paired["group_accuracy"])
    difference = {g: -paired["group_accuracy_drop"][g] for g in names}
    # a group under the metric's min_group_size has no interval (None): it is left out of both
    drop_ci = paired.get("group_accuracy_drop_ci")
    difference_ci = {g: [-drop_ci[g][1], -drop_ci[g][0]] for g in names if drop_ci.get(g)} if drop_ci else None
    sim_ci = simulated_metrics.get("group_accuracy_ci")
    within = (
        {g: bool(sim_ci[g][0] - 1e-12 <= deployed_metrics["group_accuracy"][g] <= sim_ci[g][1] + 1e-12)
         for g in names if sim_ci.get(g)}
        if sim_ci else None
    )
    return {
        "flip_rate": paired["flip_rate"],
        "group_flip_rate": paired["group_flip_rate"],
        "accuracy_difference": -paired["accuracy_drop"],
        "group_accuracy_difference": difference,
        "group_accuracy_difference_ci": difference_ci,
        "within_simulated_ci": within,
        "gap": {"simulated": simulated_metrics["accuracy_gap"], "deployed": deployed_metrics["accuracy_gap"]},
        "disparate_drop": {
            "simulated": simulated_metrics.get("disparate_drop"), "deployed": deployed_metrics.get("disparate_drop"),
        },
    }


def to_markdown(comparisons: Mapping[str, Mapping[str, Any]], group_names: list[str]) -> str:
    """One row per recipe: flip rate between simulation and artifact, each group's accuracy
    difference (deployed − simulated, points, paired interval), gap and disparate drop of both."""
    if not comparisons:
        return ""
    head = ["recipe", "flip rate sim vs deployed", *[f"Δ {g}" for g in group_names],
            "gap sim → deployed", "disparate drop sim → deployed", "deployed inside sim CI"]
    rows = []
    for name, c in comparisons.items():
        ci = c.get("group_accuracy_difference_ci") or {}
        cells = [f"{signed_pct(c['group_accuracy_difference'][g])}"
                 + (f" [{signed_pct(ci[g][0])}, {signed_pct(ci[g][1])}]" if g in ci else "") for g in group_names]
        within = c.get("within_simulated_ci")
        inside = "n/a" if within is None else (
            ("all groups" if len(within) == len(group_names) else "all groups with an interval")
            if all(within.values()) else "not: " + ", ".join(g for g, ok in within.items() if not ok)
        )
        dd = c["disparate_drop"]
        rows.append([name, pct(c["flip_rate"]), *cells, f"{pct(c['gap']['simulated'])} → {pct(c['gap']['deployed'])}",
                     f"{pct(dd['simulated'])} → {pct(dd['deployed'])}", inside])
    note = (
        "\nSimulated = the recipe's quantized torch model; deployed = its ONNX Runtime model "
        f"(rows '<recipe>{DEPLOYED_SUFFIX}' above). Δ = deployed − simulated accuracy (points), brackets: paired "
        "bootstrap interval; 'inside sim CI': the deployed group accuracy lies in the simulated model's interval."
    )
    return markdown_table(head, rows) + "\n" + note + "\n"


# ---------------------------------------------------------------------------- a run's export step
def check_exportable(model: Any, recipes: Any) -> None:
    """Raise :class:`~hf_fairquant.errors.UnsupportedByBackendError` if a recipe has bits ONNX
    Runtime cannot run on ``model`` (before any training or export)."""
    from .quantization import QuantRecipe
    from .quantization.onnx import onnx_plan

    for r in recipes:
        onnx_plan(model, QuantRecipe.parse(r).plan(model))


def not_exportable_reason(model: Any, recipe: Any) -> str | None:
    """Why ``recipe`` has no ONNX Runtime model (the error's message), or None if it has one."""
    from .errors import UnsupportedByBackendError

    try:
        check_exportable(model, [recipe])
    except UnsupportedByBackendError as err:
        return str(err)
    return None


def export_deployed(
    model: Any, config: Any, calibration_dataset: Any, spec: Any, directory: Any, *, calibration_size: int, seed: int,
    processing_class: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Export ``model`` under each of ``config.recipes`` (an :class:`~hf_fairquant.quantization.onnx.ExportConfig`)
    into ``directory/onnx/``; returns ({audited name: OrtModel}, one description per file)."""
    import torch

    from .quantization import QuantRecipe
    from .quantization.onnx import ONNX_DIR, export_onnx, load_onnx, onnx_file_name

    deployed, files = {}, []
    for i, r in enumerate(config.recipes):
        recipe = QuantRecipe.parse(r)
        result = export_onnx(
            model, recipe, directory, calibration_dataset, spec, calibration_size=calibration_size, seed=seed,
            block_size=config.block_size, file_name=onnx_file_name(recipe, primary=i == 0),
            processing_class=processing_class,
        )
        name = str(recipe).upper()
        deployed[name] = load_onnx(result.quantized_path, num_threads=torch.get_num_threads())
        kernels: dict[str, int] = {}
        for layer in result.layers.values():
            kernels[layer["kernel"] or "float"] = kernels.get(layer["kernel"] or "float", 0) + 1
        files.append({
            "name": deployed_name(name), "recipe": name,
            "file": f"{ONNX_DIR}/{result.quantized_path.name}", "size_bytes": result.quantized_path.stat().st_size,
            "fp32_file": f"{ONNX_DIR}/{result.fp32_path.name}", "fp32_size_bytes": result.fp32_path.stat().st_size,
            "fp32_max_abs_logit_difference": result.fp32_max_abs_diff, "kernels": kernels,
            "inputs": deployed[name].input_names,
            "input_shapes": {i.name: list(i.shape) for i in deployed[name].session.get_inputs()},
            "input_types": {i.name: i.type for i in deployed[name].session.get_inputs()},
        })
    return deployed, files


def measure_speedups(model: Any, deployed: Mapping[str, Any], files: list[dict[str, Any]], eval_dataset: Any,
                     directory: Any, config: Any, processing_class: Any = None) -> None:
    """Add each file's throughput ratio vs torch FP32 (and ORT FP32's), measured side by side on
    ``config.speed_batches`` test batches of ``config.speed_batch_size``, to ``files`` in place."""
    from itertools import islice
    from pathlib import Path

    import torch

    from .batching import iterate_batches
    from .quantization.onnx import load_onnx, throughput

    if not config.speed_batches or not files:
        return
    batches = list(islice(iterate_batches(model, eval_dataset, config.speed_batch_size, processing_class=processing_class),
                          config.speed_batches))
    torch_fp32 = throughput(model, batches)
    ort_fp32 = throughput(load_onnx(Path(directory) / files[0]["fp32_file"], num_threads=torch.get_num_threads()), batches)
    for f in files:
        f["speedup"] = {
            "batch_size": config.speed_batch_size, "batches": len(batches), "threads": torch.get_num_threads(),
            "vs_torch_fp32": throughput(deployed[f["recipe"]], batches) / torch_fp32,
            "ort_fp32_vs_torch_fp32": ort_fp32 / torch_fp32,
        }


def deployment_lines(deployment: Mapping[str, Any] | None) -> list[str]:
    """The run's screen lines about the deployed artifacts."""
    if not deployment:
        return []
    lines = []
    for f in deployment.get("files", []):
        speed = f.get("speedup")
        lines.append(
            f"deployed (ONNX Runtime): {f['file']} ({f['recipe']}) — {f['size_bytes'] / 1e3:.0f} kB vs "
            f"{f['fp32_size_bytes'] / 1e3:.0f} kB FP32"
            + (f", {speed['vs_torch_fp32']:.2f}× torch FP32 throughput at batch {speed['batch_size']}" if speed else "")
        )
    for name, reason in (deployment.get("not_exported") or {}).items():
        lines.append(f"not exported: {name} — {reason.split('. It runs')[0]}")
    return lines


def files_markdown(deployment: Mapping[str, Any] | None) -> str:
    """A table of the exported files: recipe, kernels, size vs FP32, measured speed-up."""
    if not deployment or not deployment.get("files"):
        return ""
    head = ["file", "recipe", "kernels (layers)", "size", "× FP32 bytes", "throughput × torch FP32", "ORT FP32 × torch FP32"]
    rows = []
    for f in deployment["files"]:
        speed = f.get("speedup") or {}
        rows.append([
            f"`{f['file']}`", f["recipe"], ", ".join(f"{k} {n}" for k, n in f["kernels"].items()),
            f"{f['size_bytes'] / 1e3:.0f} kB", f"{f['size_bytes'] / f['fp32_size_bytes']:.2f}",
            f"{speed['vs_torch_fp32']:.2f}" if speed else "—", f"{speed['ort_fp32_vs_torch_fp32']:.2f}" if speed else "—",
        ])
    first = deployment["files"][0]
    speed = first.get("speedup")
    note = (f"\nFP32 graph `{first['fp32_file']}` ({first['fp32_size_bytes'] / 1e3:.0f} kB; logits within "
            f"{first['fp32_max_abs_logit_difference']:.1e} of torch). ")
    if speed:
        note += (f"Throughput measured side by side in the run, {speed['batches']} test batches of {speed['batch_size']}, "
                 f"{speed['threads']} thread(s).")
        if min(f["speedup"]["vs_torch_fp32"] for f in deployment["files"] if f.get("speedup")) < 1:
            note += (" Below 1: a model this small is overhead-bound (per-op dispatch and the quantize/dequantize "
                     "steps cost more than the integer arithmetic saves).")
    for name, reason in (deployment.get("not_exported") or {}).items():
        note += f"\n\n**{name} is not exported**: {reason}"
    return markdown_table(head, rows) + "\n" + note + "\n"


def card_snippet(repo_id: str, deployment: Mapping[str, Any], predictions_line: str) -> str:
    """The model card's "run it with onnxruntime" code (needs onnxruntime and huggingface_hub only);
    ``predictions_line`` turns ``logits`` into predictions (the task's, see ``Task.snippet_predictions``)."""
    f = deployment["files"][0]
    inputs = f["inputs"]
    feeds = ", ".join(f'"{n}": {n}' for n in inputs)
    lines = []
    for n in inputs:
        shape = tuple(d if isinstance(d, int) else (1 if i == 0 else 16) for i, d in enumerate(f["input_shapes"][n]))
        dtype = "np.int64" if "int64" in f["input_types"][n] else "np.float32"
        lines.append(f"{n} = np.{'ones' if dtype == 'np.int64' else 'zeros'}({shape}, {dtype})")
    lines[-1] += "  # preprocessed like the torch model's inputs"
    example = "\n".join(lines)
    return (
        "import numpy as np\nimport onnxruntime as ort\nfrom huggingface_hub import hf_hub_download\n\n"
        f'path = hf_hub_download("{repo_id}", "{f["file"]}")\n'
        'session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])\n'
        f"{example}\n"
        f'logits = session.run(["logits"], {{{feeds}}})[0]\n'
        + predictions_line
    )
