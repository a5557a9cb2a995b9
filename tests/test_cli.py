import sys

from hf_fairquant.cli import _command_line, build_parser, main


def test_recorded_command_drops_the_token(monkeypatch):
    argv = ["hf-fairquant", "run", "r.yaml", "--token", "hf_SECRET1", "--push-to-hub", "me/m", "--token=hf_SECRET2"]
    monkeypatch.setattr(sys, "argv", argv)
    recorded = _command_line()
    assert "SECRET" not in recorded
    assert recorded == "hf-fairquant run r.yaml --push-to-hub me/m"


def test_every_command_is_wired():
    parser = build_parser()
    for argv in (["run", "r.yaml", "--dry-run"], ["train", "r.yaml", "--overwrite"], ["push", "out", "--repo-id", "me/m"]):
        args = parser.parse_args(argv)
        assert callable(args.func) and args.command == argv[0]


def test_train_without_a_mitigation_section_is_a_user_error(tmp_path, capsys):
    from hf_fairquant.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {source: digits, long_tail_classes: ['3']}\nmodel: {name_or_path: user/model}\n")
    assert main(["train", str(recipe), "--output-dir", str(tmp_path / "out")]) == 2
    assert "has no `mitigation` section: nothing for `train` to do" in capsys.readouterr().err


def test_cli_audits_class_name_labels_that_match_the_models_label2id(tmp_path, capsys):
    """Issue 26, item 12: string labels whose names the model's label2id knows are audited, not
    refused with "the model has no config.label2id"; names it does not know are refused."""
    import json

    import numpy as np
    from datasets import Dataset, DatasetDict, Features, Image, Value
    from transformers import ResNetConfig, ResNetForImageClassification

    names = ["cat", "dog", "fox"]
    config = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          downsample_in_first_stage=False, num_labels=3, id2label=dict(enumerate(names)),
                          label2id={n: i for i, n in enumerate(names)})
    ResNetForImageClassification(config).save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)

    def split(n, labels):
        features = Features(image=Image(), label=Value("string"), group=Value("string"))
        return Dataset.from_dict({"image": list(rng.integers(0, 255, (n, 8, 8), dtype=np.uint8)),
                                  "label": [labels[i % len(labels)] for i in range(n)],
                                  "group": ["a" if i % 2 else "b" for i in range(n)]}, features=features)

    DatasetDict({"train": split(12, names), "test": split(9, names)}).save_to_disk(str(tmp_path / "data"))
    common = ["audit", "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "data"), "--recipes", "w8",
              "--n-boot", "0", "--calibration-size", "4"]
    assert main([*common, "--output-dir", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["audit"]["fp"]["metrics"]["group_count"] == {"a": 4, "b": 5}
    DatasetDict({"train": split(12, names), "test": split(9, ["cat", "emu"])}).save_to_disk(str(tmp_path / "bad"))
    assert main(["audit", "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "bad"), "--recipes", "w8",
                 "--n-boot", "0", "--output-dir", str(tmp_path / "out2")]) == 2
    assert "['emu'] that are not in the model's config.label2id; allowed names: ['cat', 'dog', 'fox']" in capsys.readouterr().err
