"""Write files and folders under a temporary name, then rename: no half-written artifact.

Every temporary lives beside its target as ``.<name>.tmp-<pid>-<random>`` and is removed when
the ``with`` block fails, when the process exits (``atexit``) and on SIGTERM/SIGHUP (a handler
installed on first use where the signal still has its default action). A temporary left by a
process that died anyway (SIGKILL, power loss) is swept by the next write to the same target:
its pid is not alive. The swap of a whole folder runs with SIGINT/SIGTERM/SIGHUP blocked, so a
signal never falls between "old folder moved away" and "new folder moved in".

:func:`output_lock` lets one run at a time write an output folder: a ``flock``-ed ``.<name>.lock``
beside it names the holder's pid and start time, and the OS frees it when that process dies.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: output folders are not locked
    fcntl = None

#: Signals whose default action (terminate) would otherwise strand temporaries.
_CLEANUP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)
_SWAP_BLOCKED = {s for s in (*_CLEANUP_SIGNALS, getattr(signal, "SIGINT", None)) if s}
_pending: set[Path] = set()
_lock = threading.Lock()
_installed = False


# ---------------------------------------------------------------------------- temporaries
def temp_prefix(target: str | Path) -> str:
    """The name prefix of this process's temporaries for ``target``."""
    return f".{Path(target).name}.tmp-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?")


def sweep_stale(target: str | Path) -> list[Path]:
    """Remove temporaries of ``target`` left by dead processes; returns what was removed.

    A stale ``.<name>.old-<pid>`` whose ``target`` is gone (a crash in mid-swap) is renamed
    back to ``target`` instead: the previous complete folder comes back.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = []
    for entry in sorted(target.parent.iterdir()):
        match = _TEMP_RE.match(entry.name)
        if not match or match.group("name") != target.name:
            continue
        pid = match.group("pid")
        if pid is not None and (int(pid) == os.getpid() or _pid_alive(int(pid))):
            continue  # a live writer (maybe this process): not stale
        if match.group("kind") == "old" and not target.exists():
            os.replace(entry, target)
            warnings.warn(f"restored {target} from {entry.name}, left by an interrupted swap", RuntimeWarning, stacklevel=2)
            continue
        _remove(entry)
        removed.append(entry)
    if removed:
        warnings.warn(
            f"removed {len(removed)} temporary folder(s)/file(s) of {target} left by an earlier interrupted run: "
            + ", ".join(p.name for p in removed), RuntimeWarning, stacklevel=2,
        )
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _track(path: Path) -> None:
    _install_handlers()
    with _lock:
        _pending.add(path)


def _untrack(path: Path) -> None:
    with _lock:
        _pending.discard(path)


def cleanup_pending() -> None:
    """Remove every temporary this process still holds (atexit and the signal handler call it)."""
    with _lock:
        paths = list(_pending)
        _pending.clear()
    for path in paths:
        _remove(path)


def _on_signal(signum: int, frame: object) -> None:
    cleanup_pending()
    signal.signal(signum, signal.SIG_DFL)  # then die of the signal, as without this handler
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(cleanup_pending)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _CLEANUP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:  # never replace a handler someone else set
            signal.signal(sig, _on_signal)


def _mkdtemp(target: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    _track(tmp)
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give what mkdir would
    return tmp


@contextlib.contextmanager
def _swap_guard() -> Iterator[None]:
    """Signals wait until both renames of a swap are done."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SWAP_BLOCKED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def scratch_directory(target: str | Path, purpose: str = "work") -> Iterator[Path]:
    """A temporary folder beside ``target`` for intermediate files (e.g. Trainer checkpoints),
    removed on success, on failure, at exit and on SIGTERM; never part of ``target``."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target) + purpose + "-", dir=target.parent))
    _track(tmp)
    try:
        yield tmp
    finally:
        _remove(tmp)
        _untrack(tmp)


# ---------------------------------------------------------------------------- writers
@contextlib.contextmanager
def atomic_directory(target: str | Path, keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target`` whole.

    ``keep``: names of entries of an existing ``target`` that the new folder carries over
    (hard-linked, so the old folder stays complete until the swap) unless the block wrote
    the same name. On an exception the temporary folder is removed and ``target`` is left
    as it was. Stale temporaries of ``target`` from dead processes are swept first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    tmp = _mkdtemp(target)
    try:
        yield tmp
        for name in keep:
            src, dst = target / name, tmp / name
            if src.exists() and not dst.exists() and target.is_dir():
                _link_copy(src, dst)
    except BaseException:
        _remove(tmp)
        _untrack(tmp)
        raise
    old = target.parent / f".{target.name}.old-{os.getpid()}-{os.urandom(3).hex()}"
    with _swap_guard():
        moved = target.exists()
        if moved:
            os.replace(target, old)
            _track(old)
        os.replace(tmp, target)
        _untrack(tmp)
    if moved:
        _remove(old)
        _untrack(old)


def _link_copy(src: Path, dst: Path) -> None:
    """Copy by hard links where the filesystem allows (same folder tree: it does), else bytes."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link, symlinks=True)
    else:
        link(str(src), str(dst))


@contextlib.contextmanager
def atomic_files(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder inside ``target``; on success move each file into ``target``.

    Unlike :func:`atomic_directory` this keeps whatever else ``target`` holds (a Trainer's
    output dir has checkpoints): every file appears whole under its name or not at all.
    Files move in name order, except ``*.safetensors`` last, so readers that look for the
    weights find the small files already there.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for entry in target.iterdir():  # left inside by an earlier process that died
        match = re.match(r"^\.tmp-(?:(\d+)-)?", entry.name)
        if match and entry.is_dir() and not (match.group(1) and _pid_alive(int(match.group(1)))):
            _remove(entry)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=target))
    _track(tmp)
    try:
        yield tmp
        for src in sorted(tmp.iterdir(), key=lambda p: (p.suffix == ".safetensors", p.name)):
            os.replace(src, target / src.name)
    finally:
        _remove(tmp)
        _untrack(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    _track(Path(tmp))
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _untrack(Path(tmp))
    return path


# ---------------------------------------------------------------------------- one run per output folder
def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``.<name>.lock`` beside it (never inside: the folder is swapped whole)."""
    target = Path(target).expanduser().resolve()
    return target.parent / f".{target.name}.lock"


def _holder(path: Path) -> dict:
    """What a lock file says about the run that holds it (``{}`` if unreadable or still being written)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    if not info.get("pid"):
        return "another run (it has not written its pid yet)"
    if info["pid"] == os.getpid() and info.get("host") == socket.gethostname():
        return f"this process (pid {info['pid']}, started {info.get('started')}): a run inside a run"
    started = info.get("started") or "an unknown time"
    host = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
    return f"another run (pid {info['pid']}{host}, started {started}{', ' + info['command'] if info.get('command') else ''})"


def _acquire(path: Path) -> int:
    """An open descriptor of ``path`` holding an exclusive ``flock``; the OS drops the lock when the
    process dies, so a lock file left by a killed run is free and taken over. Retries when the file
    was replaced between open and lock (another process released and removed it)."""
    from .errors import FairQuantError

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as err:
            raise FairQuantError(f"cannot create the lock file {path} ({err.strerror}): the output folder's parent "
                                 "must be writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return -1
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file its holder had just removed: lock the new one


@contextlib.contextmanager
def output_lock(target: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``target``'s lock for the ``with`` block: one run per output folder at a time.

    Two runs writing one folder would both finish, and the last swap would silently drop the other's
    results. A second run fails at once with a :class:`~hf_fairquant.errors.FairQuantError` naming the
    first's pid and start time. A lock left by a run that died (its pid is gone) is taken over with a
    warning. Without ``fcntl`` (not POSIX) nothing is locked."""
    from .errors import FairQuantError

    path = lock_path(target)
    if fcntl is None:  # pragma: no cover - POSIX only
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path)
    if fd < 0:
        info = _holder(path)
        raise FairQuantError(
            f"output folder {Path(target)} is in use by {_describe(info)}: one run per output folder at a time "
            f"(both would finish and one's results would be lost). Wait for it, or choose another --output-dir "
            f"(lock file: {path})"
        )
    try:
        previous = _holder(path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            warnings.warn(f"took over {path}, left by {_describe(previous)} that is no longer running",
                          RuntimeWarning, stacklevel=3)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                "started": datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # removed while still locked: a waiting opener sees a new inode and retries
        os.close(fd)


def output_locked(target_of: Callable[..., str | Path | None]) -> Callable:
    """Decorator: run the function under :func:`output_lock` of ``target_of(*args, **kwargs)`` (no lock when None)."""
    def wrap(func: Callable) -> Callable:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            target = target_of(*args, **kwargs)
            if target is None:
                return func(*args, **kwargs)
            with output_lock(target):
                return func(*args, **kwargs)
        return run
    return wrap


def contains_cwd(folder: str | Path) -> bool:
    """Whether ``folder`` is the current working folder or one above it (replacing it would
    pull the floor from under the process: EBUSY, or a cwd that no longer exists)."""
    here = Path.cwd().resolve()
    there = Path(folder).expanduser().resolve()
    return here == there or there in here.parents
