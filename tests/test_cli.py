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
