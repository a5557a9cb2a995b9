import sys

from hf_fairquant.cli import _command_line, build_parser


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
