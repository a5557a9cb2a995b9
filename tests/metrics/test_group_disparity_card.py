"""group_disparity: the metric card documents every input and output key; its examples and the docstring's run."""

from __future__ import annotations

import ast
import doctest
import inspect
import re
import types
from pathlib import Path

import pytest
import yaml

from hf_fairquant.metrics import GROUP_DISPARITY

FOLDER = Path(GROUP_DISPARITY)
CARD = (FOLDER / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """Text of the section (level 2 or 3) with this title, up to the next heading of level 2 or 3."""
    match = re.search(rf"^#{{2,3}} {re.escape(title)}\n(.*?)(?=^#{{2,3}} )", CARD, flags=re.S | re.M)
    assert match, f"README.md has no '{title}' section"
    return match.group(1)


def documented(title: str) -> list[str]:
    """Names in bold at the start of the section's bullets: '- **name** (type): ...'."""
    return re.findall(r"^- \*\*(\w+)\*\*", section(title), flags=re.M)


def full_compute(group_disparity) -> dict:
    """A call that switches every optional output on: binary, reference, both losses, bootstrap."""
    return group_disparity.compute(
        predictions=[1, 0, 1, 1, 0, 1],
        references=[1, 0, 0, 1, 1, 1],
        groups=["a", "a", "a", "b", "b", "b"],
        groups_2=[0, 1, 0, 1, 0, 1],
        reference_predictions=[1, 0, 0, 1, 1, 0],
        losses=[0.1, 0.2, 0.9, 0.3, 1.2, 0.2],
        reference_losses=[0.1, 0.2, 0.3, 0.3, 0.4, 0.5],
        n_boot=20,
        confidence_level=0.9,
        seed=3,
    )


def test_front_matter():
    front = yaml.safe_load(CARD.split("---\n")[1])
    assert {"title", "emoji", "colorFrom", "colorTo", "sdk_version", "description"} <= front.keys()
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["pinned"] is False
    assert {"evaluate", "metric"} <= set(front["tags"])
    assert len(front["description"]) > 100


def test_every_output_key_is_documented(group_disparity):
    keys = documented("Output Values")
    assert len(keys) == len(set(keys)), "a key is documented twice"
    assert set(keys) == set(full_compute(group_disparity))


def test_every_input_is_documented():
    accepted = [p for p in inspect.signature(_module_class()._compute).parameters if p != "self"]
    assert documented("Inputs") == accepted


def _module_class():
    import evaluate

    return type(evaluate.load(GROUP_DISPARITY))


def _run_doctests(text: str, name: str, group_disparity) -> None:
    """Run '>>>' examples that start with evaluate.load("group_disparity") against the local module."""
    shim = types.SimpleNamespace(load=lambda path, **kwargs: group_disparity)
    test = doctest.DocTestParser().get_doctest(text, {"evaluate": shim}, name, None, 0)
    assert test.examples, f"no examples in {name}"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {name} (see the output above)"


def test_card_examples_run():
    """As written: the real `evaluate.load` of the path the card imports (no stand-in)."""
    blocks = re.findall(r"```python\n(>>>.*?)```", CARD, flags=re.S)
    assert len(blocks) >= 4
    assert 'evaluate.load("group_disparity")' not in CARD  # not a module on the Hub: it fails
    test = doctest.DocTestParser().get_doctest("\n".join(blocks), {}, "README.md", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in README.md (see the output above)"


def test_docstring_examples_run(group_disparity):
    _run_doctests(group_disparity.inputs_description, "group_disparity.py", group_disparity)


def test_output_example_is_a_real_output(group_disparity):
    """The card's 'Output Example' is exactly what the 'How to Use' call returns."""
    example = re.search(r"Output Example:\n```python\n(.*?)```", CARD, flags=re.S).group(1)
    call_source = re.search(r"^>>> results = (gd\.compute\(.*?\))$", section("How to Use"), flags=re.M).group(1)
    call = ast.parse(call_source, mode="eval").body
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    assert group_disparity.compute(**kwargs) == ast.literal_eval(example)


@pytest.mark.parametrize("name", ["app.py", "requirements.txt", "README.md", "group_disparity.py"])
def test_module_folder_is_complete(name):
    assert (FOLDER / name).is_file()


def test_app_and_requirements_follow_evaluate():
    app = (FOLDER / "app.py").read_text()
    assert 'evaluate.load("group_disparity")' in app and "launch_gradio_widget(module)" in app
    requirements = (FOLDER / "requirements.txt").read_text().split()
    assert any(r.startswith("evaluate") for r in requirements) and "numpy" in requirements
    assert any(r.startswith("scipy") for r in requirements)  # the tests and the minimum detectable drop


def test_module_is_self_contained():
    source = (FOLDER / "group_disparity.py").read_text()
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, flags=re.M))
    assert imported <= {"__future__", "math", "numbers", "typing", "datasets", "numpy", "scipy", "evaluate"}
