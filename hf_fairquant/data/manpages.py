"""Debian's translated manual pages as a multilingual long tail of languages and scripts, offline.

**What the texts are.** Technical documentation: the Linux man-pages project's pages (Debian's
``manpages`` / ``manpages-dev``, English) and their translations, made by volunteer teams
(manpages-l10n for most languages, the JM project for Japanese, the Chinese Man Pages Project for
Chinese), installed by ``make data`` (``apt-get install manpages-de manpages-fr …``). Many pages
are translations of the same page (``ls(1)`` exists in 22 languages here), so the splits are
made by page name and a ``parallel`` subset holds pages that exist in many languages. Licences:
see ``docs/data.md`` (GPL-3+ for the manpages-l10n translations, the upstream pages' own — mostly
free — licences for the originals).

**Rendering: groff, not a parser.** Each page is rendered by groff's own UTF-8 terminal output,
``groff -t -Kutf-8 -man -Tutf8 -P-cbou -rLL=20000n -rHY=0`` (``-K`` for UTF-8 input through
preconv — every page installed here is UTF-8 —, ``-t`` for tables, ``-P-cbou`` for plain text
without bold/underline overstrikes or SGR escapes, a line length of 20,000 ens so that a
paragraph is one line and nothing is hyphenated; at 100,000 grotty starts discarding text). A roff
parser written here would have to re-implement the man macros, ``tbl``, the escape and
special-character names (``\\(em``, ``\\*(lq``, ``\\[u00E9]``), string and number registers and
the conditionals translated pages use; groff gets all of them right, and its output for Japanese,
Chinese, Cyrillic and Greek pages is clean UTF-8 (checked on ``ls(1)`` in ja, ru, de and on one
page of every language: no mojibake, no stray escapes). ``man -l`` runs the same groff pipeline
plus its own encoding and preprocessor detection and took 2.3× as long (42 against 18 ms per page
on 100 German pages, this machine), so groff is called directly; the preprocessors a page asks
for in its ``'\\" tep`` first line are honoured as man does. What remains is cleaned in Python: the
running header and footer lines dropped, backspace overstrikes and ANSI escapes removed (in case
a groff elsewhere emits them), U+2010/U+2212 written as ``-``, each line stripped, runs of spaces
collapsed, at most one blank line between paragraphs. The translators' closing credits section
(the same few sentences on every page of a language) is dropped unless ``keep_credits``.

**Speed and the cache.** Rendering all 10,943 page files of the 38 installed packages took 366 s
of wall time with 2 groff workers on this 2-core machine while other jobs ran on it (groff's own
CPU time: 261 s, 24 ms per page; Python's 37 s): too slow to repeat per run. Rendered texts are
cached under ``~/.cache/hf_fairquant/manpages`` (``HF_FAIRQUANT_MANPAGES_CACHE``), one gzip'd JSON
file per language (23 MB in all), keyed per page by the SHA-1 of its compressed source and per
folder by groff's version and this module's rendering flags. That key is finer than the packages'
versions: an upgraded package re-renders only the pages whose bytes changed. A warm load of the
whole corpus (190 M characters, 113 k chunks of ≤ 2,000 characters) takes 16–25 s, a few
languages capped at 20 pages well under a second.

**Which pages.** ``pages_from="packages"`` (default): the files dpkg lists for the installed
``manpages*`` packages (``/var/lib/dpkg/info/manpages*.list``) — reproducible on any Debian
machine with the same packages, whatever else is installed. English is then the man-pages
project's own pages (sections 3, 2 and 7 mostly: the C library, system calls, overviews);
``english_originals=True`` adds the English page of every translated page from wherever it is
installed (``ls(1)`` from coreutils …), which makes English parallel to the translations but
depends on what this machine has installed. ``pages_from="directory"`` takes every page under
``man_dir`` (any package). Symlinks and ``.so`` redirections (aliases of another page) are
skipped: each page is counted once.

**Columns.** ``text`` (a chunk of a page: chunks are cut at paragraph boundaries, then lines,
sentences, spaces, to at most ``max_chars`` characters), ``language`` (the locale directory's
name without its charset: an ISO 639-1 code, with an ISO 3166 region where Debian installs one
— ``pt_BR``, ``zh_CN``, ``zh_TW`` — and ``en`` for ``/usr/share/man/man<N>``), ``script`` (from
the page's characters, see :func:`detect_script`), ``page`` (name), ``section`` (``1``, ``3``,
``3ssl`` …), ``chunk`` (0, 1, … within the page).

**Splits.** ``train`` / ``test`` by page name: a name is in one split in every language and every
section, so no test page's text (or its translation) is seen in training. The test names are a
seeded ``test_fraction`` of the names, stratified by how many languages have the page (widely
and rarely translated pages are in both splits in the same proportion), topped up so that every
language with two pages or more has at least one in each split. ``parallel``: the test
rows of pages (name and section) present in at least ``parallel_min_languages`` of the loaded
languages — per-language differences on it are not differences of topic.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import time
import unicodedata
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from datasets import Dataset, DatasetDict, Features, Value

from .._config import split_commas
from ..errors import FairQuantError, MissingFileError

logger = logging.getLogger(__name__)

#: Where Debian installs manual pages (``HF_FAIRQUANT_MAN_DIR`` overrides).
MAN_DIR = Path(os.environ.get("HF_FAIRQUANT_MAN_DIR", "/usr/share/man"))
#: dpkg's per-package file lists.
DPKG_INFO_DIR = Path("/var/lib/dpkg/info")
#: The rendered-text cache (``HF_FAIRQUANT_MANPAGES_CACHE`` overrides).
CACHE_DIR = Path(os.environ.get("HF_FAIRQUANT_MANPAGES_CACHE", Path.home() / ".cache" / "hf_fairquant" / "manpages"))
#: What ``make data`` installs: English plus every translation Debian 12 packages (the ``-dev``
#: packages hold sections 2 and 3). ``manpages-pt`` / ``-pt-dev`` are empty dummies.
MANPAGES_PACKAGES = [
    "manpages", "manpages-dev",
    "manpages-cs", "manpages-cs-dev", "manpages-da", "manpages-da-dev", "manpages-de", "manpages-de-dev",
    "manpages-el", "manpages-es", "manpages-es-dev", "manpages-fi", "manpages-fr", "manpages-fr-dev",
    "manpages-hu", "manpages-id", "manpages-it", "manpages-it-dev", "manpages-ja", "manpages-ja-dev",
    "manpages-mk", "manpages-nb", "manpages-nl", "manpages-nl-dev", "manpages-pl", "manpages-pl-dev",
    "manpages-pt-br", "manpages-pt-br-dev", "manpages-ro", "manpages-ru", "manpages-ru-dev", "manpages-sr",
    "manpages-sv", "manpages-tr", "manpages-uk", "manpages-uk-dev", "manpages-vi", "manpages-zh",
]  # fmt: skip
#: The cache's file name inside :data:`CACHE_DIR`.
CACHE_FILE = "rendered.sqlite3"
#: groff's arguments (the input's encoding and preprocessors are added per page).
GROFF_ARGS = ["-man", "-Tutf8", "-P-cbou", "-rLL=20000n", "-rHY=0"]
#: Bump when the cleaning below changes: the cache is keyed by it.
RENDER_VERSION = 1
#: Headings of the closing section that translation teams add to every page (translators, the
#: translation's licence, where to report errors) and of the colophon the Japanese (JM) and
#: Chinese projects append: the same few sentences on every page of a language, dropped by default.
CREDITS_HEADINGS = frozenset({
    "PŘEKLAD", "OVERSÆTTELSE", "ÜBERSETZUNG", "ΜΕΤΑΦΡΑΣΗ", "TRADUCCIÓN", "KÄÄNNÖS", "TRADUCTION", "FORDÍTÁS",
    "TERJEMAHAN", "TRADUZIONE", "ПРЕВОД", "OVERSETTELSE", "VERTALING", "TŁUMACZENIE", "TRADUÇÃO", "TRADUCERE",
    "ПЕРЕВОД", "ÖVERSÄTTNING", "ÇEVİREN", "ПЕРЕКЛАД", "DỊCH", "COLOPHON",
    "この文書について", "翻訳者謝辞", "跋", "译者", "譯者", "[中文版维护人]", "[中文版維護人]", "[中文版最新更新]",
})  # fmt: skip
#: Where chunks are cut, in order of preference (the separator stays with the piece before it).
SEPARATORS = ("\n\n", "\n", ". ", "。", " ")
ENGLISH = "en"

_PAGE_PATH = re.compile(r"^(?:(?P<locale>[^/]+)/)?man(?P<dirsec>[^/]+)/(?P<file>[^/]+)\.gz$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_OVERSTRIKE = re.compile(r".\x08")
_HEADER = re.compile(r"\S+\s*\(\S+\)\s*$")  # "LS(1)   User Commands   LS(1)" / "… 2023-02-05   ls(1)"
_SPACES = re.compile(r"[ \t\u00a0]{2,}")
_PREPROCESSORS = {"t": "-t", "e": "-e", "p": "-p", "g": "-g", "r": "-R"}


@dataclass(frozen=True)
class ManPage:
    """One installed page file: ``language`` (``en`` for the untranslated tree), ``page``, ``section``."""

    path: Path
    language: str
    page: str
    section: str
    package: str | None = None


# ---------------------------------------------------------------------------------- finding pages
def _parse_page_path(rel: str) -> tuple[str, str, str] | None:
    """``de/man1/ls.1.gz`` (relative to the man directory) → ``("de", "ls", "1")``; None if not a page."""
    m = _PAGE_PATH.match(rel)
    if m is None:
        return None
    name = m.group("file")
    page, dot, section = name.rpartition(".")
    if not dot or not page:
        page, section = name, m.group("dirsec")
    locale = m.group("locale")
    return (ENGLISH if locale is None else locale.split(".")[0]), page, section


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)  # not a symlink, not a folder
    except OSError:
        return False


def _dpkg_lists(dpkg_info: Path) -> dict[str, Path]:
    lists = {}
    for lst in sorted(dpkg_info.glob("manpages*.list")):
        package = lst.name[: -len(".list")].split(":")[0]  # "manpages-de" (or "name:arch")
        lists[package] = lst
    return lists


def installed_manpages_packages(dpkg_info: str | Path | None = None) -> list[str]:
    """Names of the installed ``manpages*`` packages (from dpkg's file lists)."""
    return sorted(_dpkg_lists(Path(dpkg_info) if dpkg_info is not None else DPKG_INFO_DIR))


def find_manpages(
    man_dir: str | Path | None = None,
    pages_from: str = "packages",
    languages: Sequence[str] | None = None,
    english_originals: bool = False,
    dpkg_info: str | Path | None = None,
) -> list[ManPage]:
    """The page files to load (not yet read), sorted by language, page, section.

    ``pages_from="packages"``: the files of the installed ``manpages*`` packages (dpkg's lists);
    ``"directory"``: every ``*.gz`` page under ``man_dir``. Symlinks are skipped here, ``.so``
    redirections when read. ``english_originals`` (packages only) adds the English page of each
    translated page found under ``man_dir/man<N>``, whatever package installed it.
    """
    root = Path(man_dir) if man_dir is not None else MAN_DIR
    if pages_from not in ("packages", "directory"):
        raise FairQuantError(f"pages_from must be 'packages' or 'directory', got {pages_from!r}")
    if english_originals and pages_from != "packages":
        raise FairQuantError("english_originals applies to pages_from='packages' (a directory already has them)")
    prefix = str(root).rstrip("/") + "/"
    wanted = set(languages) if languages else None
    entries: list[tuple[str, str, str, str, str | None]] = []  # (path, language, page, section, package)
    if pages_from == "packages":
        info = Path(dpkg_info) if dpkg_info is not None else DPKG_INFO_DIR
        lists = _dpkg_lists(info)
        if not lists:
            raise MissingFileError(
                f"no manpages* package is installed (no {info}/manpages*.list): run `make data` (it runs "
                f"`apt-get install {' '.join(MANPAGES_PACKAGES[:4])} …`), or use pages_from='directory' "
                f"with man_dir / HF_FAIRQUANT_MAN_DIR pointing at a man tree"
            )
        for package, lst in lists.items():
            for line in lst.read_text(encoding="utf-8", errors="replace").splitlines():
                parsed = _parse_page_path(line[len(prefix) :]) if line.startswith(prefix) else None
                if parsed is not None:
                    entries.append((line, *parsed, package))
    else:
        if not root.is_dir():
            raise MissingFileError(f"man directory {root} does not exist (set man_dir or HF_FAIRQUANT_MAN_DIR)")
        for path in root.glob("**/*.gz"):
            parsed = _parse_page_path(path.relative_to(root).as_posix())
            if parsed is not None:
                entries.append((str(path), *parsed, None))
    if english_originals:
        have = {(page, section) for _, language, page, section, _ in entries if language == ENGLISH}
        translated = {(page, section) for _, language, page, section, _ in entries if language != ENGLISH}
        for page, section in sorted(translated - have):
            entries.append((f"{prefix}man{section[0]}/{page}.{section}.gz", ENGLISH, page, section, None))
    kept = [e for e in entries if wanted is None or e[1] in wanted]
    found = [ManPage(Path(path), language, page, section, package)
             for path, language, page, section, package in kept if _is_regular(path)]
    if pages_from == "packages" and entries and not found and wanted is None:
        raise MissingFileError(
            f"the manpages* packages are installed but none of their {len(entries)} pages is under {root} "
            f"(a dpkg `path-exclude=/usr/share/man/*`, as in slim container images, drops them)"
        )
    unique = {p.path: p for p in found}  # a file listed twice (two lists, or symlinked dirs) once
    return sorted(unique.values(), key=lambda p: (p.language, p.page, p.section, str(p.path)))


# ---------------------------------------------------------------------------------- rendering
def _groff() -> str:
    groff = shutil.which("groff")
    if groff is None:
        raise MissingFileError("groff is not installed (`apt-get install groff`, or `make data`); it renders the pages")
    return groff


@lru_cache(maxsize=1)
def render_key() -> str:
    """Identifies how pages are rendered: groff's version, its arguments, :data:`RENDER_VERSION`."""
    version = subprocess.run([_groff(), "--version"], capture_output=True, text=True, check=False).stdout
    payload = json.dumps([version.splitlines()[:1], GROFF_ARGS, RENDER_VERSION])
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def _is_redirect(source: bytes) -> bool:
    """A ``.so other/page.N`` stub (an alias of another page), after leading comments."""
    for line in source.splitlines():
        line = line.strip()
        if not line or line.startswith((b'.\\"', b"'\\\"", b'\\"')):
            continue
        return line.startswith(b".so ")
    return False


def _groff_args(source: bytes) -> list[str]:
    first = source.split(b"\n", 1)[0]
    pre = ["-t"]  # tbl passes text without tables through unchanged
    m = re.match(rb"^['.]\\\"\s*([a-z]+)\s*$", first)
    if m:
        pre += [_PREPROCESSORS[c] for c in m.group(1).decode() if c in _PREPROCESSORS and _PREPROCESSORS[c] not in pre]
    try:
        source.decode("utf-8")
        encoding = ["-Kutf-8"]
    except UnicodeDecodeError:
        encoding = ["-k"]  # preconv guesses (coding tag, BOM, else latin-1)
    return pre + encoding


def clean_rendered(text: str) -> str:
    """groff's terminal output → plain text (see the module docstring)."""
    text = _ANSI.sub("", text)
    text = _OVERSTRIKE.sub("", text)
    text = text.replace("\u2010", "-").replace("\u2212", "-").replace("\u00ad", "")
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    nonblank = [i for i, line in enumerate(lines) if line]
    if nonblank and _HEADER.search(lines[nonblank[0]]):
        lines[nonblank[0]] = ""
    if len(nonblank) > 1 and _HEADER.search(lines[nonblank[-1]]):
        lines[nonblank[-1]] = ""
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def drop_credits(text: str) -> str:
    """``text`` without its closing credits: from the first paragraph that starts with a heading
    line in :data:`CREDITS_HEADINGS` to the end (the credits close every page that has them)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line in CREDITS_HEADINGS and i > 0 and not lines[i - 1]:
            return "\n".join(lines[:i]).strip()
    return text


def render_manpage(source: bytes, timeout: float = 60.0) -> str:
    """One page's roff source (decompressed) → plain text, by groff (empty for a ``.so`` alias)."""
    if _is_redirect(source):
        return ""
    proc = subprocess.run(
        [_groff(), *_groff_args(source), *GROFF_ARGS], input=source, capture_output=True, timeout=timeout,
        env={**os.environ, "LC_ALL": "C.UTF-8", "GROFF_NO_SGR": "1"}, check=False,
    )
    if proc.returncode != 0 and not proc.stdout:
        raise FairQuantError(f"groff failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:300]}")
    return clean_rendered(proc.stdout.decode("utf-8", errors="replace"))


class _Cache:
    """Rendered texts in one SQLite file: ``(render key, SHA-1 of the compressed page) → zlib'd text``.

    SQLite gives what a cache shared by processes needs: a lookup reads only the pages asked for,
    new pages are added without rewriting the others, and two processes writing at once wait for
    each other's transaction instead of losing one. A damaged or unwritable file is bypassed.
    """

    def __init__(self, root: Path | None):
        self.db = None
        self.key = render_key()
        if root is None:
            return
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(root / CACHE_FILE, timeout=60)
            self.db.execute("CREATE TABLE IF NOT EXISTS pages (render TEXT, source TEXT, text BLOB, PRIMARY KEY (render, source))")
        except (OSError, sqlite3.Error) as err:
            logger.warning("manpages cache %s unusable (%s); rendering without it", root / CACHE_FILE, err)
            self.db = None

    def get(self, sources: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        if self.db is None:
            return found
        try:
            for start in range(0, len(sources), 500):
                batch = list(sources[start : start + 500])
                marks = ",".join("?" * len(batch))
                query = f"SELECT source, text FROM pages WHERE render = ? AND source IN ({marks})"
                for source, blob in self.db.execute(query, [self.key, *batch]):
                    found[source] = zlib.decompress(blob).decode("utf-8")
        except (sqlite3.Error, zlib.error) as err:
            logger.warning("manpages cache unreadable (%s); re-rendering", err)
            return {}
        return found

    def put(self, items: Sequence[tuple[str, str]]) -> None:
        if self.db is None or not items:
            return
        rows = [(self.key, source, zlib.compress(text.encode("utf-8"), 6)) for source, text in items]
        try:
            with self.db:  # one transaction
                self.db.executemany("INSERT OR REPLACE INTO pages VALUES (?, ?, ?)", rows)
        except sqlite3.Error as err:
            logger.warning("could not write the manpages cache (%s)", err)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def render_manpages(
    pages: Sequence[ManPage], cache_dir: str | Path | None | bool = None, workers: int | None = None,
) -> list[str]:
    """The plain text of each page (``""`` for ``.so`` aliases), rendered by groff or read from
    the cache (``cache_dir`` None: :data:`CACHE_DIR`; False: no cache)."""
    root = None if cache_dir is False else Path(cache_dir) if cache_dir not in (None, True) else CACHE_DIR
    cache = _Cache(root)
    try:
        compressed = [page.path.read_bytes() for page in pages]
        keys = [hashlib.sha1(data).hexdigest() for data in compressed]
        cached = cache.get(sorted(set(keys)))
        texts = [cached.get(key) for key in keys]
        todo = [i for i, text in enumerate(texts) if text is None]
        if todo:
            texts = _render(pages, compressed, keys, todo, texts, cache, workers)
    finally:
        cache.close()
    return [t or "" for t in texts]


def _render(pages, compressed, keys, todo, texts, cache, workers) -> list:  # noqa: ANN001
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    started = time.perf_counter()
    done: list[tuple[str, str]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(render_manpage, gzip.decompress(compressed[i])): i for i in todo}
        bar = tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="render man pages",
                   disable=len(futures) < 200 or None)
        for future in bar:
            i = futures[future]
            try:
                text = future.result()
            except (FairQuantError, subprocess.TimeoutExpired) as err:
                logger.warning("could not render %s: %s", pages[i].path, err)
                text = ""
            texts[i] = text
            done.append((keys[i], text))
            if len(done) >= 500:  # an interrupted first render keeps what it did
                cache.put(done)
                done = []
    cache.put(done)
    logger.info("rendered %d man pages in %.1f s (%d workers)", len(todo), time.perf_counter() - started, workers)
    return texts


# ---------------------------------------------------------------------------------- scripts
#: Unicode character-name prefixes that name a script other than the name's first word.
_SCRIPT_PREFIXES = (
    ("CJK UNIFIED IDEOGRAPH", "Han"), ("CJK COMPATIBILITY IDEOGRAPH", "Han"), ("IDEOGRAPHIC", "Han"),
    ("HIRAGANA", "Kana"), ("KATAKANA", "Kana"), ("HALFWIDTH KATAKANA", "Kana"),
    ("HANGUL", "Hangul"), ("HALFWIDTH HANGUL", "Hangul"), ("FULLWIDTH LATIN", "Latin"),
    ("MODIFIER LETTER", "Common"),
)  # fmt: skip


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str | None:
    """The script of a letter (``Latin``, ``Cyrillic``, ``Greek``, ``Han``, ``Kana``, ``Hangul``,
    ``Arabic`` … — the first word of its Unicode name, CJK names mapped); None for non-letters."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    if not name:
        return "Common"
    for prefix, script in _SCRIPT_PREFIXES:
        if name.startswith(prefix):
            return script
    word = name.split(" ", 1)[0]
    return word.capitalize() if word.isalpha() else "Common"


def script_counts(text: str) -> Counter:
    """Letters of ``text`` per script (:func:`char_script`)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ascii_ = codes < 128
    folded = codes[ascii_] | 32
    counts: Counter = Counter()
    latin = int(np.count_nonzero((folded >= 97) & (folded <= 122)))
    if latin:
        counts["Latin"] = latin
    values, numbers = np.unique(codes[~ascii_], return_counts=True)
    for code, n in zip(values.tolist(), numbers.tolist()):
        script = char_script(chr(code))
        if script is not None and script != "Common":
            counts[script] += n
    return counts


def detect_script(text: str, min_share: float = 0.2) -> str:
    """The writing system of ``text`` from its letters, not from any language name.

    Letters are counted per Unicode script. Han and kana together are ``Japanese`` when kana are
    at least 5 % of them, else ``Han``; Hangul (with any Han) is ``Hangul``. Latin letters occur
    in every man page (command names, options, code), so the text is written in the most frequent
    non-Latin script when that script holds at least ``min_share`` of all letters; otherwise it
    is ``Latin`` (or the majority script). ``Common`` when there is no letter.
    """
    counts = script_counts(text)
    total = sum(counts.values())
    if total == 0:
        return "Common"
    han, kana, hangul = counts.pop("Han", 0), counts.pop("Kana", 0), counts.pop("Hangul", 0)
    if hangul and hangul >= kana:
        counts["Hangul"] = hangul + han
    elif kana and kana >= 0.05 * (kana + han):
        counts["Japanese"] = kana + han + hangul
    elif han or kana or hangul:
        counts["Han"] = han + kana + hangul
    latin = counts.pop("Latin", 0)
    if counts:
        script, n = counts.most_common(1)[0]
        if n >= min_share * total or not latin:
            return script
    return "Latin"


# ---------------------------------------------------------------------------------- chunks, splits
def chunk_text(text: str, max_chars: int | None, separators: Sequence[str] = SEPARATORS) -> list[str]:
    """``text`` cut into pieces of at most ``max_chars`` characters, each as long as it can be:
    paragraphs are packed together, a paragraph too long is cut at line breaks, then sentence
    ends, then spaces, and only text with none of these (CJK without punctuation) mid-word.
    ``max_chars`` None: the whole text, one piece. Pieces are stripped; empty ones dropped."""
    text = text.strip()
    if not text:
        return []
    if max_chars is None or len(text) <= max_chars:
        return [text]
    level = next((i for i, sep in enumerate(separators) if sep in text), None)
    if level is None:
        return [text[k : k + max_chars].strip() for k in range(0, len(text), max_chars) if text[k : k + max_chars].strip()]
    sep = separators[level]
    parts = text.split(sep)
    parts = [p + sep for p in parts[:-1]] + [parts[-1]]
    chunks: list[str] = []
    current = ""
    for part in parts:
        if len(current) + len(part) <= max_chars:
            current += part
            continue
        if current.strip():
            chunks.append(current)
        if len(part) > max_chars:
            chunks.extend(chunk_text(part, max_chars, separators[level + 1 :]))
            current = ""
        else:
            current = part
    if current.strip():
        chunks.append(current)
    return [c.strip() for c in chunks if c.strip()]


def split_page_names(page_languages: dict[str, set[str]], test_fraction: float, seed: int = 0) -> set[str]:
    """The test page names: a seeded ``test_fraction`` of ``page_languages``' names, stratified by
    coverage (how many languages have the page), then topped up so that every language with at
    least two pages has one in each split.

    Names are ordered by coverage (ties in a seeded random order) and every ``1/test_fraction``-th
    one, from a seeded offset, is a test name. A language left with no test page gets its least
    translated page moved to test; one left with no training page gets its least translated test
    page moved back (the name moves in every language, so the fraction shifts by a few names).
    """
    if not 0 < test_fraction < 1:
        raise FairQuantError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    names = sorted(page_languages)
    tiebreak = dict(zip(names, rng.permutation(len(names)).tolist()))
    order = sorted(names, key=lambda n: (len(page_languages[n]), tiebreak[n]))
    offset = rng.random()
    test = {
        n for rank, n in enumerate(order)
        if int((rank + 1) * test_fraction + offset) > int(rank * test_fraction + offset)
    }
    by_language: dict[str, list[str]] = defaultdict(list)
    for n in order:  # least translated first
        for language in page_languages[n]:
            by_language[language].append(n)

    def count(language: str, in_test: bool) -> int:
        return sum((n in test) == in_test for n in by_language[language])

    def others(name: str, language: str) -> list[str]:  # the other languages a move of `name` touches
        return [o for o in page_languages[name] if o != language and len(by_language[o]) > 1]

    for _ in range(3):  # a move can empty another language's split: a few passes settle it
        changed = False
        for language in sorted(by_language):
            own = by_language[language]
            if len(own) < 2 or 0 < count(language, True) < len(own):
                continue
            moving_to_test = count(language, True) == 0
            candidates = [n for n in own if (n in test) != moving_to_test]
            safe = [n for n in candidates if all(count(o, not moving_to_test) > 1 for o in others(n, language))]
            name = (safe or candidates)[0]
            test.symmetric_difference_update({name})
            changed = True
        if not changed:
            break
    return test


_FEATURES = Features(
    text=Value("string"), language=Value("string"), script=Value("string"), page=Value("string"),
    section=Value("string"), chunk=Value("int32"),
)


def load_manpages(
    languages: str | Iterable[str] | None = None,
    max_chars: int | None = 2000,
    min_pages: int = 1,
    max_pages: int | None = None,
    test_fraction: float = 0.1,
    parallel_min_languages: int = 5,
    seed: int = 0,
    pages_from: str = "packages",
    english_originals: bool = False,
    man_dir: str | Path | None = None,
    cache_dir: str | Path | None | bool = None,
    workers: int | None = None,
    min_script_share: float = 0.2,
    keep_credits: bool = False,
) -> DatasetDict:
    """The ``manpages`` source: splits ``train``, ``test`` and ``parallel`` (see the module docstring).

    - ``languages``: codes to keep (``"de,ja,ru"`` or a list; None: all installed);
    - ``max_chars``: the longest chunk in characters (None: one example per page);
    - ``min_pages``: drop languages with fewer pages (after ``languages``, before ``max_pages``);
    - ``max_pages``: keep at most this many pages per language — the most widely translated ones
      first (then by name), so a small sample stays parallel (for tests and quick runs);
    - ``test_fraction``, ``seed``: the share of page names held out (seeded, stratified);
    - ``parallel_min_languages``: a test page (name and section) in at least this many loaded
      languages goes into ``parallel`` as well;
    - ``pages_from``, ``english_originals``, ``man_dir``: which files (see :func:`find_manpages`);
    - ``cache_dir`` (False: none), ``workers`` (groff processes; default: the CPU count);
    - ``min_script_share``: see :func:`detect_script`;
    - ``keep_credits``: keep each translated page's closing credits section (translators, licence,
      where to report errors — identical boilerplate on every page of a language; dropped by
      default, see :data:`CREDITS_HEADINGS`).
    """
    from .._config import check_positive_int

    if max_chars is not None:
        check_positive_int("max_chars", max_chars)
    check_positive_int("min_pages", min_pages)
    check_positive_int("parallel_min_languages", parallel_min_languages)
    if max_pages is not None:
        check_positive_int("max_pages", max_pages)
    wanted = split_commas(languages) if languages is not None else None
    pages = find_manpages(man_dir, pages_from, wanted, english_originals)
    if wanted:
        missing = sorted(set(wanted) - {p.language for p in pages})
        if missing:
            installed = sorted(_installed_languages(man_dir, pages_from))
            raise FairQuantError(
                f"no installed man pages for language(s) {missing}; installed: {installed} "
                f"(`make data` installs the manpages-* packages)"
            )
    per_language = Counter(p.language for p in pages)
    dropped = sorted(lang for lang, n in per_language.items() if n < min_pages)
    if dropped:
        logger.info("manpages: dropped %s (fewer than min_pages=%d pages)", dropped, min_pages)
        pages = [p for p in pages if per_language[p.language] >= min_pages]
    if not pages:
        raise FairQuantError(f"no man pages left to load (min_pages={min_pages}; pages per language: {dict(per_language)})")
    if max_pages is not None:
        pages = _cap_pages(pages, max_pages)
    texts = render_manpages(pages, cache_dir=cache_dir, workers=workers)
    if not keep_credits:
        texts = [drop_credits(t) for t in texts]
    kept = [(p, t) for p, t in zip(pages, texts) if t]  # .so aliases and empty renders
    coverage: dict[str, set] = defaultdict(set)
    page_coverage: dict[tuple[str, str], set] = defaultdict(set)
    for p, _ in kept:
        coverage[p.page].add(p.language)
        page_coverage[(p.page, p.section)].add(p.language)
    test_names = split_page_names(coverage, test_fraction, seed)
    rows: dict[str, dict[str, list]] = {s: {k: [] for k in _FEATURES} for s in ("train", "test")}
    parallel: list[int] = []
    for p, text in kept:
        script = detect_script(text, min_script_share)
        split = "test" if p.page in test_names else "train"
        is_parallel = split == "test" and len(page_coverage[(p.page, p.section)]) >= parallel_min_languages
        for n, piece in enumerate(chunk_text(text, max_chars)):
            if is_parallel:
                parallel.append(len(rows["test"]["text"]))
            for k, v in zip(_FEATURES, (piece, p.language, script, p.page, p.section, n)):
                rows[split][k].append(v)
    if not parallel:
        logger.warning(
            "manpages: the parallel split is empty (no test page in ≥ %d loaded languages)", parallel_min_languages
        )
    out = DatasetDict({s: _dataset(r) for s, r in rows.items()})
    out["parallel"] = out["test"].select(parallel)
    return out


def _dataset(columns: dict[str, list]) -> Dataset:
    """``Dataset.from_dict`` through pyarrow arrays (3× faster on 100k page chunks)."""
    import pyarrow as pa

    table = pa.table({k: pa.array(v, type=_FEATURES[k].pa_type) for k, v in columns.items()})
    return Dataset.from_dict({k: table[k] for k in columns}, features=_FEATURES)


def _cap_pages(pages: list[ManPage], max_pages: int) -> list[ManPage]:
    """At most ``max_pages`` per language: the pages (name, section) in most languages first."""
    langs: dict[tuple[str, str], set] = defaultdict(set)
    for p in pages:
        langs[(p.page, p.section)].add(p.language)
    by_language: dict[str, list[ManPage]] = defaultdict(list)
    for p in pages:
        by_language[p.language].append(p)
    out = []
    for items in by_language.values():
        items.sort(key=lambda p: (-len(langs[(p.page, p.section)]), p.page, p.section))
        out += items[:max_pages]
    return sorted(out, key=lambda p: (p.language, p.page, p.section, str(p.path)))


def _installed_languages(man_dir: str | Path | None, pages_from: str) -> set[str]:
    try:
        return {p.language for p in find_manpages(man_dir, pages_from)}
    except FairQuantError:
        return set()


def manpages_available(languages: Iterable[str] = (), man_dir: str | Path | None = None) -> str | None:
    """None when the ``manpages`` source can load ``languages`` here; else why not (a test's skip reason)."""
    if shutil.which("groff") is None:
        return "groff is not installed (make data installs it with the manpages packages)"
    try:
        have = {p.language for p in find_manpages(man_dir, "packages")}
    except FairQuantError as err:
        return str(err)
    missing = sorted(set(languages) - have)
    if missing:
        return f"manpages for {missing} are not installed (make data installs manpages-*)"
    return None


def summarize(dsd: DatasetDict) -> list[dict]:
    """Per language: pages, chunks per split, parallel pages, characters, scripts (of pages)."""
    stats: dict[str, dict] = defaultdict(lambda: {"pages": set(), "train": 0, "test": 0, "parallel": set(),
                                                  "characters": 0, "scripts": Counter()})  # fmt: skip
    for split in ("train", "test", "parallel"):
        if split not in dsd:
            continue
        ds = dsd[split]
        for language, page, section, script, chunk, text in zip(
            ds["language"][:], ds["page"][:], ds["section"][:], ds["script"][:], ds["chunk"][:], ds["text"][:]
        ):
            row = stats[language]
            if split == "parallel":
                row["parallel"].add((page, section))
                continue
            row[split] += 1
            row["pages"].add((page, section))
            row["characters"] += len(text)
            if chunk == 0:
                row["scripts"][script] += 1
    out = [{"language": language, "pages": len(r["pages"]), "train_chunks": r["train"], "test_chunks": r["test"],
            "parallel_pages": len(r["parallel"]), "characters": r["characters"],
            "scripts": dict(r["scripts"].most_common())} for language, r in stats.items()]  # fmt: skip
    return sorted(out, key=lambda r: (-r["pages"], r["language"]))


def print_summary(**options: object) -> None:
    """Load the source with ``options`` and print its per-language table (the one in docs/data.md):
    ``python -c "from hf_fairquant.data.manpages import print_summary; print_summary()"``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    dsd = load_manpages(**options)  # type: ignore[arg-type]
    print(f"loaded in {time.perf_counter() - started:.1f} s: " + ", ".join(f"{s} {len(d):,} chunks" for s, d in dsd.items()))
    print("| language | pages | train chunks | test chunks | parallel pages | characters | script of its pages |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in summarize(dsd):
        scripts = ", ".join(f"{s} {n:,}" for s, n in r["scripts"].items())
        print(f"| {r['language']} | {r['pages']:,} | {r['train_chunks']:,} | {r['test_chunks']:,} | {r['parallel_pages']:,} "
              f"| {r['characters']:,} | {scripts} |")
