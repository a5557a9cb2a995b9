import os
import stat

import pytest

from hf_fairquant._atomic import atomic_directory, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert _mode(path) == 0o644  # not mkstemp's 0600
    assert _mode(tmp_path / "out") == 0o755  # not mkdtemp's 0700


def test_a_failed_write_leaves_the_old_folder_and_no_temporary(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("whole")
    assert [p.name for p in target.iterdir()] == ["new.txt"]


# ---------------------------------------------------------------- one run per output folder (issue 26, item 8)
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

from hf_fairquant._atomic import lock_path, output_lock  # noqa: E402
from hf_fairquant.errors import FairQuantError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOLD = textwrap.dedent("""
    import sys, time
    from hf_fairquant._atomic import output_lock
    with output_lock(sys.argv[1], command="holder"):
        print("locked", flush=True)
        time.sleep(120)
""")
TRY = textwrap.dedent("""
    import sys
    from hf_fairquant._atomic import output_lock
    with output_lock(sys.argv[1]):
        print("ran", flush=True)
""")


def _python(code: str, target: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of ``tmp_path / 'out'`` until killed."""
    target = tmp_path / "out"
    proc = _python(HOLD, target)
    assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
    yield proc, target
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_a_second_process_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(holder):
    proc, target = holder
    second = _python(TRY, target)
    out, err = second.communicate(timeout=60)
    assert second.returncode != 0 and "ran" not in out
    assert f"output folder {target} is in use by another run (pid {proc.pid}, started 20" in err, err
    assert "holder" in err and "one run per output folder at a time" in err
    proc.send_signal(signal.SIGKILL)  # dies holding it: the file stays, the OS frees the flock
    proc.communicate(timeout=30)
    assert lock_path(target).exists()
    third = _python(TRY, target)
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0 and out.strip() == "ran", err
    assert f"took over {lock_path(target)}, left by another run (pid {proc.pid}" in err and "no longer running" in err
    assert not lock_path(target).exists()  # released: removed


def test_the_lock_is_released_after_the_block_and_on_error(tmp_path):
    target = tmp_path / "out"
    with output_lock(target) as path:
        assert path == tmp_path / ".out.lock" and path.exists()
        with pytest.raises(FairQuantError, match=r"in use by this process"):  # a run inside a run
            with output_lock(target):
                pass
    assert not path.exists()
    with pytest.raises(RuntimeError):
        with output_lock(target):
            raise RuntimeError("boom")
    with output_lock(target):  # free again
        pass


def test_pipeline_run_and_cli_explain_take_the_lock_before_any_work(holder, tmp_path, capsys):
    from hf_fairquant.cli import main
    from hf_fairquant.run import load_recipe, run
    from tests.fail_early_fixtures import save_data, tiny_recipe, write_recipe

    proc, target = holder
    data = save_data(tmp_path / "d", ["a", "b"], ["a", "b"], n_train=8, n_test=4)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe(data)), output_dir=str(target))
    with pytest.raises(FairQuantError, match=rf"in use by another run \(pid {proc.pid}"):  # was: both runs exit 0
        run(recipe)
    assert not target.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    code = main(["explain", "--model", str(tmp_path / "no-model"), "--recipe", "w8", "--output-dir", str(target)])
    assert code == 2 and not target.exists()
    assert f"in use by another run (pid {proc.pid}" in capsys.readouterr().err  # before the missing model is noticed
