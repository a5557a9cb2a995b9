"""benchmarks/render_results.py on a tiny synthetic results set: tables, computed verdicts, the bar."""

import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("render_results", ROOT / "benchmarks" / "render_results.py")
render_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_results)

GROUPS = ("head", "tail")
META = {
    "command": "python benchmarks/reproduce.py --seeds 0,1", "recipe": "recipes/x.yaml", "wall_time_s": 12.0, "command_wall_time_s": 30.0,
    "torch_threads": 1, "cpu_count": 2,
    "versions": {k: "1" for k in ("python", "torch", "transformers", "datasets", "optimum-quanto", "git_commit")},
    "settings": {
        "seeds": [0, 1], "groups": list(GROUPS), "tail_classes": ["coat"],
        "train_counts": {"head": 300, "tail": 15}, "test_counts": {"head": 50, "tail": 50},
        "data": {"source": "fashion_mnist", "long_tail_fraction": 0.05, "seed": 0},
        "fp_training": {"num_train_epochs": 1, "learning_rate": 0.003, "per_device_train_batch_size": 128},
        "mitigation": {"quantization": "w2a8", "group_sampling": "group_balanced", "sampling_power": 0.5,
                       "group_weighting": "sqrt_inverse_frequency", "num_train_epochs": 3, "learning_rate": 0.001},
    },
}
# name: (kind, reference, bits, head, tail) — accuracies in %
ROWS = {
    "FP": ("fp", None, 32, 96, 70),
    "PTQ W8A8": ("ptq", "FP", 8, 96, 70),
    "PTQ W4A8": ("ptq", "FP", 4, 96, 69.5),
    "PTQ W4": ("ptq", "FP", 4, 96, 69.5),
    "PTQ W2A8": ("ptq", "FP", 2, 90, 50),
    "FP fine-tune": ("finetune", None, 32, 96, 71),
    "fair FP fine-tune": ("finetune", None, 32, 93, 78),
    "fair FP → PTQ W2A8": ("ptq", "fair FP fine-tune", 2, 90, 60),
    "QAT W2A8": ("qat", "FP fine-tune", 2, 94, 68),
    "QAT W2A8 + balanced": ("qat", "FP fine-tune", 2, 93, 74),
    "fair QAT (everything combined)": ("qat", "fair FP fine-tune", 2.33, 92.5, 79),
}


def metrics(row: str, seed: int) -> dict:
    kind, ref, bits, head, tail = ROWS[row]
    h, t = (head + 0.2 * seed) / 100, (tail - 0.2 * seed) / 100
    m = {"overall": (h + t) / 2, "group_accuracy": {"head": h, "tail": t}, "gap": h - t, "effective_bits": bits,
         "worst_class": "shirt", "worst_class_accuracy": t - 0.1, "wall_time_s": 1.0, "gap_change": None,
         "group_accuracy_drop": None}
    if ref is not None:
        r = metrics(ref, seed)
        m["gap_change"] = m["gap"] - r["gap"]
        m["group_accuracy_drop"] = {g: r["group_accuracy"][g] - m["group_accuracy"][g] for g in GROUPS}
    return m


def explanation(seed: int, scale: float) -> dict:
    def group(var_fp, var_q, loss_fp, loss_q, grad, lam, measured):
        return {"logits": {"fp": {"logit_variance": var_fp, "loss": loss_fp, "accuracy": 0.9},
                           "quantized": {"logit_variance": var_q, "loss": loss_q, "accuracy": 0.8},
                           "variance_ratio": var_q / var_fp, "excess_loss": loss_q - loss_fp},
                "grad": grad, "lam": lam, "bound": {"gradient_term": grad, "curvature_term": lam, "bound": grad + lam,
                                                    "taylor": measured, "measured_excess_loss": measured}}

    g = {"head": group(10, 9, 0.1, 0.1 + 0.1 * scale, 1.0 + seed, 30, 0.1 * scale),
         "tail": group(8, 7, 1.0, 1.0 + 0.5 * scale, 7.0, 140, 0.5 * scale)}
    return {"logits": {k: v["logits"] for k, v in g.items()},
            "gradients": {k: {"fp": v["grad"], "quantized": v["grad"]} for k, v in g.items()},
            "curvature": {"fp": {k: {"lambda_max": v["lam"], "trace": 3 * v["lam"]} for k, v in g.items()}},
            "bound": {"delta_norm": scale, "groups": {k: v["bound"] for k, v in g.items()}, "ordering_matches": True}}


def part(rows: dict) -> dict:
    info = [{"name": n, "kind": k, "reference": r, "base": None, "quantization": "w2a8" if k in ("ptq", "qat") else None,
             "settings": {}} for n, (k, r, *_) in rows.items()]
    return {"meta": META, "rows": info, "seeds": {str(s): {"fp_train_s": 1.0, "rows": {n: metrics(n, s) for n in rows}}
                                                  for s in (0, 1)}}


def write_results(folder: Path, resnet: dict) -> None:
    vit = part({n: ROWS[n] for n in ("FP", "PTQ W4A8", "PTQ W2A8", "FP fine-tune", "fair FP fine-tune", "QAT W2A8",
                                      "fair QAT (everything combined)")})
    vit["vit"] = {"config": {"model_type": "vit", "patch_size": 7}, "training": {"num_train_epochs": 5}}
    chain = {"meta": META, "seeds": {str(s): {"W2A8": explanation(s, 8.0), "W4A8": explanation(s, 1.0)} for s in (0, 1)}}
    perf = {"meta": META,
            "trainer_overhead": {"recipe": "w4a8", "batch_size": 128, "timed_steps": 100, "repeats": 2,
                                 "plain_ms": 50.0, "fair_ms": 51.0, "ratio": 1.02},
            "curvature": {"target": 1e-3, "examples_per_group": 512, "parameters": 20000, "start_vectors": [0, 1],
                          "groups": {g: {"lanczos_hvps": 17, "power_hvps": 20} for g in GROUPS},
                          "ratio_hvps": 0.85, "ratio_time": 0.9},
            "audit": {"recipes": ["w8a8", "w2a8"], "n_boot": 1000, "repeats": 3, "audit_s": 3.0, "quantize_s": 0.5,
                      "evaluate_s": 4.0, "ratio_vs_evaluate": 0.75, "ratio_vs_quantize_and_evaluate": 0.67},
            "bytes": {"w4_bytes": 24000, "fp32_bytes": 88000, "ratio": 0.273, "weights_ratio": 0.254}}
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("resnet", resnet), ("vit", vit), ("chain", chain), ("performance", perf)):
        (folder / f"{name}.json").write_text(json.dumps(data))


def render(tmp_path: Path, resnet: dict) -> str:
    folder = tmp_path / "results"
    write_results(folder, resnet)
    render_results.main(["--results-dir", str(folder), "--output", str(tmp_path / "results.md")])
    return (tmp_path / "results.md").read_text()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[dict, str, Path]:
    tmp = tmp_path_factory.mktemp("render")
    resnet = part(ROWS)
    return resnet, render(tmp, resnet), tmp


def test_document_has_every_table_plot_and_computed_verdict(baseline):
    _, doc, tmp = baseline
    for heading in ("## The demo ResNet", "## The bar", "## The chain", "## The main rows with a tiny ViT",
                    "## What the library costs", "## Verdicts"):
        assert heading in doc
    assert "| PTQ W2A8 | 2.00 | 70.0 ± 0.0 | 90.1 ± 0.1 | 49.9 ± 0.1 | shirt 39.9 ± 0.1 |" in doc
    # tail loses 20 points more than head at W2A8 only, 0.5 at W4*: below the 1-point rule
    assert "PTQ costs the minority (tail) group more accuracy than the majority (head) | **only at some bit widths**: W2A8 |" in doc
    assert "Quantized logits have lower variance than the FP logits (per group) | **holds**" in doc
    assert "The minority group has the larger Hessian λ_max (FP model) | **holds**" in doc
    assert "**The committed code clears the bar.**" in doc
    assert "fair QAT beats the fair FP fine-tune quantized after training (fair FP → PTQ W2A8) | **holds**" in doc
    assert "| trainer overhead |" in doc and "| 1.020 |" in doc
    assert all((tmp / "results" / f).is_file() for f in ("resnet_groups.png", "vit_groups.png", "chain.png"))


def test_a_changed_number_changes_the_document_and_the_bar(baseline, tmp_path):
    resnet, doc, _ = baseline
    changed = copy.deepcopy(resnet)
    for seed in changed["seeds"].values():
        row = seed["rows"]["fair QAT (everything combined)"]
        row["group_accuracy"]["tail"] -= 0.05  # now 5 points below the fair FP model's tail
    new = render(tmp_path, changed)
    assert new != doc
    assert "**The committed code does not clear the bar.**" in new
    assert "| tail accuracy ≥ fair FP's | 73.9 vs 77.9 | **fail** |" in new


def _adult(resnet: dict) -> dict:
    adult = copy.deepcopy(resnet)
    adult["meta"] = {**adult["meta"], "recipe": "recipes/adult_sex_race_bert.yaml"}
    adult["chain_test_counts"] = {"head": 50, "tail": 50}
    for s, seed in adult["seeds"].items():
        seed["chain"] = {"W2A8": explanation(int(s), 8.0)}
    return adult


def test_adult_section_is_added_without_changing_the_other_parts(baseline, tmp_path):
    resnet, doc, _ = baseline
    folder = tmp_path / "results"
    write_results(folder, resnet)
    (folder / "adult.json").write_text(json.dumps(_adult(resnet)))
    render_results.main(["--results-dir", str(folder), "--output", str(tmp_path / "results.md")])
    new = (tmp_path / "results.md").read_text()
    assert "## Real demographic groups: UCI Adult, sex × race" in new
    assert "the **minority** = the worst intersectional group" in new and "(tail, 15 training rows)" in new
    assert "**On UCI Adult the fair QAT model clears the bar** (minority = tail)." in new
    assert "### Verdicts on real demographic groups" in new and "Adult BERT: PTQ costs the minority (tail)" in new
    assert (folder / "adult_groups.png").is_file()
    # the other parts render exactly as before; only the run-facts row and the command list grow
    before, after = doc.split("## The demo ResNet")[1], new.split("## The demo ResNet")[1]
    assert after.split("\n## Real demographic groups")[0] == before.split("\n## Verdicts")[0]
    assert after.split("\n## Verdicts")[1] == before.split("\n## Verdicts")[1]


def test_adult_minority_is_the_worst_group_other_than_the_majority():
    settings = {"train_counts": {"big": 100, "mid": 50, "small": 10}, "groups": ["big", "mid", "small"]}
    def with_fp(accs: dict) -> dict:
        seeds = {str(s): {"rows": {"FP": {"group_accuracy": accs}}} for s in (0, 1)}
        return render_results.with_adult_groups({"meta": {"settings": settings}, "seeds": seeds})["meta"]["settings"]
    s = with_fp({"big": 0.7, "mid": 0.6, "small": 0.9})
    assert (s["majority"], s["minority"]) == ("big", "mid")
    s = with_fp({"big": 0.5, "mid": 0.95, "small": 0.9})  # the majority is worst: the worst of the others
    assert (s["majority"], s["minority"]) == ("big", "small")
    assert render_results.groups_by_size(s) == ("big", "small")
