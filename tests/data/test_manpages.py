"""The ``manpages`` source: rendering, scripts, chunks, splits by page name, the parallel subset —
on a hand-made man tree (needs groff) and on a small subset of the installed Debian packages."""

from __future__ import annotations

import gzip
import random
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from hf_fairquant.data import DataConfig, load_raw_grouped_dataset, load_source
from hf_fairquant.data import manpages as mp
from hf_fairquant.data.manpages import (
    MANPAGES_PACKAGES,
    chunk_text,
    clean_rendered,
    detect_script,
    drop_credits,
    load_manpages,
    manpages_available,
    split_page_names,
)
from hf_fairquant.errors import FairQuantError

needs_groff = pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed (make data installs groff-base)")
INSTALLED = ["de", "ru", "ja", "zh_CN", "el"]
_why_not = manpages_available(INSTALLED)
needs_installed = pytest.mark.skipif(_why_not is not None, reason=f"manpages source unavailable: {_why_not}")


# ------------------------------------------------------------------------------------- scripts
@pytest.mark.parametrize(
    "text, script",
    [
        ("ls - list directory contents", "Latin"),
        ("Verzeichnisinhalte auflisten: Überblick, ähnlich", "Latin"),
        ("ls - выводит список файлов каталога", "Cyrillic"),
        ("ls - перелічити вміст каталогу (Українська: ї, є, ґ)", "Cyrillic"),
        ("ls - εμφάνιση περιεχομένων καταλόγου", "Greek"),
        ("ls - 列出目录内容", "Han"),
        ("ls - 列出目錄內容", "Han"),
        ("ls - ディレクトリの内容をリスト表示する", "Japanese"),
        ("ls - 디렉터리 내용을 나열합니다", "Hangul"),
        ("ls - عرض محتويات الدليل", "Arabic"),
        ("12345 -- !!! ...", "Common"),
        ("", "Common"),
    ],
)
def test_script_is_read_from_the_characters(text, script):
    assert detect_script(text) == script


def test_latin_code_does_not_outvote_the_translation():
    # a Japanese page is full of options and code: Latin letters are the majority, yet it is Japanese
    text = "--block-size=SIZE --color=always --format=WORD -l -a -A ls cat grep 表示する 要素を一覧表示しない"
    counts = mp.script_counts(text)
    assert counts["Latin"] > counts["Han"] + counts["Kana"]
    assert detect_script(text) == "Japanese"
    # ... unless the non-Latin letters are too few: one Cyrillic word in an English paragraph
    english = "The translation of this page was made by the team; contact them at list@example.org. " * 3
    assert detect_script(english + "Перевод") == "Latin"
    assert detect_script(english + "Перевод", min_share=0.01) == "Cyrillic"


def test_fullwidth_latin_and_ideographic_marks():
    assert mp.char_script("Ａ") == "Latin" and mp.char_script("々") == "Han" and mp.char_script("ー") == "Kana"
    assert mp.char_script("1") is None and mp.char_script("。") is None


# ------------------------------------------------------------------------------------- cleaning, chunks
def test_clean_rendered_drops_header_footer_overstrikes_and_escapes():
    raw = (
        "LS(1)" + " " * 40 + "User Commands" + " " * 40 + "LS(1)\n\n\n"
        "N\bNA\bAM\bME\bE\n       ls \u2010 list   directory contents\n\n\n\n"
        "       \x1b[1m-a\x1b[0m, _\b-_\b-all\n\n"
        "GNU coreutils 9.1" + " " * 30 + "September 2022" + " " * 30 + "LS(1)\n"
    )
    assert clean_rendered(raw) == "NAME\nls - list directory contents\n\n-a, --all"


def test_drop_credits_cuts_the_translators_section():
    page = "BEZEICHNUNG\nls - auflisten\n\nSIEHE AUCH\ndir(1)\n\nÜBERSETZUNG\nDie deutsche Übersetzung …\n\nFehler an …"
    assert drop_credits(page) == "BEZEICHNUNG\nls - auflisten\n\nSIEHE AUCH\ndir(1)"
    assert drop_credits("NAME\nls\n\nSEE ALSO\ndir(1)") == "NAME\nls\n\nSEE ALSO\ndir(1)"
    assert drop_credits("ÜBERSETZUNG\nnot a section start: the page's first line") == "ÜBERSETZUNG\nnot a section start: the page's first line"


def test_chunks_are_cut_at_paragraphs_first_and_never_exceed_the_limit():
    paragraphs = [f"Paragraph {i}. " + "word " * random.Random(i).randint(5, 50) for i in range(40)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    chunks = chunk_text(text, 300)
    assert all(len(c) <= 300 for c in chunks)
    assert re.sub(r"\s+", "", "".join(chunks)) == re.sub(r"\s+", "", text)  # nothing lost, nothing added
    assert all(c.startswith("Paragraph") for c in chunks)  # no paragraph is over 300: pieces start at paragraphs
    assert len(chunks) <= len(text) // 300 * 2  # packed, not one paragraph per piece
    assert chunk_text(text, None) == [text.strip()] and chunk_text("  \n ", 10) == []


def test_text_without_spaces_is_cut_at_sentences_then_hard():
    cjk = "这是一个句子。" * 100  # 700 characters, sentence ends but no space
    chunks = chunk_text(cjk, 50)
    assert all(len(c) <= 50 for c in chunks) and "".join(chunks) == cjk
    assert all(c.endswith("。") for c in chunks)
    solid = "字" * 125
    assert chunk_text(solid, 50) == ["字" * 50, "字" * 50, "字" * 25]


# ------------------------------------------------------------------------------------- the split
def _random_coverage(seed: int) -> dict[str, set[str]]:
    rng = random.Random(seed)
    languages = [f"l{i}" for i in range(rng.randint(2, 12))]
    coverage = defaultdict(set)
    for n in range(rng.randint(5, 300)):
        k = min(len(languages), 1 + int(rng.expovariate(0.5)))
        coverage[f"page{n}"].update(rng.sample(languages, k))
    return dict(coverage)


@pytest.mark.parametrize("seed", range(30))
def test_page_split_fraction_and_every_language_in_both_splits(seed):
    coverage = _random_coverage(seed)
    fraction = random.Random(seed).choice([0.1, 0.2, 0.5])
    test = split_page_names(coverage, fraction, seed=seed)
    assert test == split_page_names(coverage, fraction, seed=seed)  # seeded
    assert test <= set(coverage)
    n = len(coverage)
    per_language = defaultdict(list)
    for name, langs in coverage.items():
        for lang in langs:
            per_language[lang].append(name)
    topped = sum(1 for names in per_language.values() if len(names) >= 2)
    assert abs(len(test) - fraction * n) <= 1 + topped  # the fraction, give or take the top-ups
    for lang, names in per_language.items():
        if len(names) >= 2:
            assert any(x in test for x in names) and any(x not in test for x in names), lang


def test_page_split_is_stratified_by_coverage_and_seeded():
    coverage = {f"w{i}": {f"l{j}" for j in range(10)} for i in range(100)}  # widely translated
    coverage |= {f"r{i}": {"l0"} | {f"l{1 + i % 9}"} for i in range(100)}  # translated once
    test = split_page_names(coverage, 0.2, seed=0)
    assert sum(n.startswith("w") for n in test) == 20 and sum(n.startswith("r") for n in test) == 20
    assert split_page_names(coverage, 0.2, seed=1) != test
    with pytest.raises(FairQuantError, match=r"test_fraction must be in \(0, 1\)"):
        split_page_names(coverage, 1.0)


# ------------------------------------------------------------------------------------- a hand-made man tree
PAGES = {  # page → {language: (NAME line, body)}
    f"tool{i}": {
        "en": (f"tool{i} \\- do thing number {i}", "This tool does a thing and writes the result to standard output."),
        "de": (f"tool{i} \\- Ding Nummer {i} tun", "Dieses Werkzeug tut etwas und schreibt das Ergebnis auf die Standardausgabe."),
        "ru": (f"tool{i} \\- сделать вещь номер {i}", "Эта программа делает что-то и пишет результат в стандартный вывод."),
        "ja": (f"tool{i} \\- 番号 {i} の処理を行う", "このツールは処理を行い、結果を標準出力に書き出す。"),
        "zh_CN": (f"tool{i} \\- 执行第 {i} 号操作", "此工具执行操作并将结果写入标准输出。"),
    }
    for i in range(12)
}
for i in range(12, 20):  # pages only English and German have
    PAGES[f"tool{i}"] = {k: v for k, v in PAGES["tool0"].items() if k in ("en", "de")}

HEADINGS = {"en": ("NAME", "DESCRIPTION"), "de": ("BEZEICHNUNG", "BESCHREIBUNG"), "ru": ("ИМЯ", "ОПИСАНИЕ"),
            "ja": ("名前", "説明"), "zh_CN": ("名称", "描述")}  # fmt: skip


def _write_tree(root: Path) -> Path:
    for page, langs in PAGES.items():
        for lang, (name_line, body) in langs.items():
            folder = root / ("man1" if lang == "en" else f"{lang}/man1")
            folder.mkdir(parents=True, exist_ok=True)
            head, desc = HEADINGS[lang]
            paras = "\n.PP\n".join([body] * 6)
            roff = f'.TH {page.upper()} 1 "2024-01-01" "tools 1.0" "User Commands"\n.SH {head}\n{name_line}\n.SH {desc}\n{paras}\n'
            if lang == "de":
                roff += ".SH ÜBERSETZUNG\nDie deutsche Übersetzung dieser Handbuchseite wurde von Freiwilligen erstellt.\n"
            (folder / f"{page}.1.gz").write_bytes(gzip.compress(roff.encode("utf-8")))
    (root / "man1" / "alias.1.gz").write_bytes(gzip.compress(b'.\\" an alias\n.so man1/tool0.1\n'))
    (root / "man1" / "link.1.gz").symlink_to(root / "man1" / "tool1.1.gz")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _write_tree(tmp_path_factory.mktemp("man"))


@pytest.fixture(scope="module")
def tree_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tree_cache")


@needs_groff
def test_hand_tree_columns_scripts_and_credits(tree, tree_cache):
    dsd = load_manpages(man_dir=tree, pages_from="directory", cache_dir=tree_cache, max_chars=None,
                        test_fraction=0.25, parallel_min_languages=5, workers=1)
    assert set(dsd) == {"train", "test", "parallel"}
    assert dsd["train"].column_names == ["text", "language", "script", "page", "section", "chunk"]
    rows = [r for split in ("train", "test") for r in dsd[split]]
    assert len(rows) == 12 * 5 + 8 * 2  # the .so alias and the symlink are not pages
    scripts = {(r["language"], r["script"]) for r in rows}
    assert scripts == {("en", "Latin"), ("de", "Latin"), ("ru", "Cyrillic"), ("ja", "Japanese"), ("zh_CN", "Han")}
    de = next(r["text"] for r in rows if r["language"] == "de" and r["page"] == "tool3")
    assert de.startswith("BEZEICHNUNG\ntool3 - Ding Nummer 3 tun\n\nBESCHREIBUNG\nDieses Werkzeug")
    assert "ÜBERSETZUNG" not in de and "TOOL3(1)" not in de and "2024-01-01" not in de  # credits, header, footer
    ja = next(r["text"] for r in rows if r["language"] == "ja" and r["page"] == "tool3")
    assert "このツールは処理を行い、結果を標準出力に書き出す。" in ja  # CJK intact, no mojibake
    assert {r["section"] for r in rows} == {"1"} and {r["chunk"] for r in rows} == {0}


@needs_groff
def test_hand_tree_splits_by_page_and_parallel_subset(tree, tree_cache):
    dsd = load_manpages(man_dir=tree, pages_from="directory", cache_dir=tree_cache, max_chars=120,
                        test_fraction=0.25, parallel_min_languages=5, seed=3, workers=1)
    train, test, parallel = (set(dsd[s]["page"][:]) for s in ("train", "test", "parallel"))
    assert train and test and not train & test  # a test page is unseen in every language
    assert set(dsd["test"]["language"][:]) == {"en", "de", "ru", "ja", "zh_CN"}  # every language is tested
    assert parallel == {p for p in test if len(PAGES[p]) == 5}
    assert set(dsd["parallel"]["language"][:]) == {"en", "de", "ru", "ja", "zh_CN"}
    assert len(dsd["parallel"]) == sum(p in parallel for p in dsd["test"]["page"][:])
    assert max(len(t) for t in dsd["train"]["text"][:]) <= 120
    # chunks of a page are numbered in order and put back together give the page
    pieces = [r for r in dsd["train"] if r["page"] == sorted(train)[0] and r["language"] == "ru"]
    assert [r["chunk"] for r in pieces] == list(range(len(pieces))) and len(pieces) > 1


@needs_groff
def test_hand_tree_options_and_the_cache(tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_manpages(man_dir=tree, pages_from="directory", cache_dir=cache, languages="de,ja", workers=1)
    assert set(first["train"]["language"][:]) | set(first["test"]["language"][:]) == {"de", "ja"}
    assert (cache / mp.CACHE_FILE).is_file()
    with monkeypatch.context() as patched:
        patched.setattr(mp, "render_manpage", lambda *a, **k: pytest.fail("rendered a cached page"))
        again = load_manpages(man_dir=tree, pages_from="directory", cache_dir=cache, languages=["de", "ja"])
        assert again["train"]["text"][:] == first["train"]["text"][:]
        kept = load_manpages(man_dir=tree, pages_from="directory", cache_dir=cache, languages="de,ja", keep_credits=True)
        assert any("ÜBERSETZUNG" in t for t in kept["train"]["text"][:] + kept["test"]["text"][:])
        capped = load_manpages(man_dir=tree, pages_from="directory", cache_dir=cache, languages="de,ja", max_pages=3)
        pages = {(r["language"], r["page"]) for s in ("train", "test") for r in capped[s]}
        assert sum(lang == "de" for lang, _ in pages) == 3
        assert {p for lang, p in pages if lang == "de"} == {p for lang, p in pages if lang == "ja"}  # shared ones first
    dropped = load_manpages(man_dir=tree, pages_from="directory", cache_dir=cache, min_pages=13)
    assert set(dropped["train"]["language"][:]) == {"en", "de"}  # ru, ja, zh_CN have 12 pages
    with pytest.raises(FairQuantError, match=r"no installed man pages for language\(s\) \['xx'\]"):
        load_manpages(man_dir=tree, pages_from="directory", cache_dir=cache, languages="de,xx")


def test_missing_tree_and_packages_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_manpages(man_dir=tmp_path / "nope", pages_from="directory", cache_dir=False)
    with pytest.raises(FileNotFoundError, match=r"no manpages\* package is installed.*make data"):
        mp.find_manpages(dpkg_info=tmp_path)
    with pytest.raises(FairQuantError, match="pages_from must be"):
        mp.find_manpages(pages_from="everything")


def test_makefile_installs_every_package_the_module_lists():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    block = re.search(r"MANPAGES_PACKAGES \?=((?:.*\\\n)*.*)\n", makefile).group(1)
    listed = set(block.replace("\\", " ").split())
    assert set(MANPAGES_PACKAGES) | {"groff-base"} == listed


# ------------------------------------------------------------------------------------- installed packages
@pytest.fixture(scope="module")
def installed_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("installed_cache")


@pytest.fixture(scope="module")
def installed(installed_cache):
    return load_manpages(languages=INSTALLED, max_pages=8, cache_dir=installed_cache,
                         test_fraction=0.3, parallel_min_languages=3, max_chars=1500)


@needs_groff
@needs_installed
def test_installed_subset_languages_scripts_and_split(installed):
    rows = [r for s in ("train", "test") for r in installed[s]]
    pages = defaultdict(set)
    for r in rows:
        pages[r["language"]].add((r["page"], r["section"]))
    assert set(pages) == set(INSTALLED)
    assert all(len(v) <= 8 for v in pages.values()) and len(pages["el"]) == 5  # Greek has 5 pages
    scripts = defaultdict(set)
    for r in rows:
        scripts[r["language"]].add(r["script"])
    assert scripts["de"] == {"Latin"} and scripts["ru"] == {"Cyrillic"} and scripts["el"] == {"Greek"}
    assert scripts["ja"] == {"Japanese"} and scripts["zh_CN"] == {"Han"}
    assert not set(installed["train"]["page"][:]) & set(installed["test"]["page"][:])
    assert max(len(t) for t in installed["train"]["text"][:]) <= 1500
    text = " ".join(installed["train"]["text"][:])
    assert "\x08" not in text and "\x1b" not in text and "\ufffd" not in text


@needs_groff
@needs_installed
def test_installed_parallel_pages_exist_in_enough_languages(installed):
    languages_of = defaultdict(set)
    for s in ("train", "test"):
        for r in installed[s]:
            languages_of[(r["page"], r["section"])].add(r["language"])
    parallel = {(r["page"], r["section"]) for r in installed["parallel"]}
    assert parallel and all(len(languages_of[p]) >= 3 for p in parallel)
    test_pages = {(r["page"], r["section"]) for r in installed["test"]}
    assert parallel == {p for p in test_pages if len(languages_of[p]) >= 3}


@needs_groff
@needs_installed
def test_data_config_defaults_and_source_options_for_manpages(installed_cache):
    options = {"languages": "de,ru", "max_pages": 5, "cache_dir": str(installed_cache)}
    config = DataConfig(source="manpages", source_options=options)
    assert (config.text_column, config.image_column, config.label_column, config.group_columns) == ("text", None, None, ["language"])
    raw, spec = load_raw_grouped_dataset(config)
    assert spec.names == ["de", "ru"] and set(raw) == {"train", "test"}
    with pytest.raises(FairQuantError, match=r"\['max_page'\] are not options of the 'manpages' source; allowed: .*max_pages"):
        load_source("manpages", max_page=5)


@needs_groff
def test_summary_counts_pages_chunks_and_scripts(tree, tree_cache):
    dsd = load_manpages(man_dir=tree, pages_from="directory", cache_dir=tree_cache, max_chars=120,
                        test_fraction=0.25, parallel_min_languages=5, seed=3, workers=1)
    rows = {r["language"]: r for r in mp.summarize(dsd)}
    assert [r["language"] for r in mp.summarize(dsd)][:2] == ["de", "en"]  # 20 pages each, then 12
    assert rows["de"]["pages"] == 20 and rows["ja"]["pages"] == 12 and rows["ja"]["scripts"] == {"Japanese": 12}
    assert rows["ru"]["train_chunks"] + rows["ru"]["test_chunks"] == sum(1 for s in ("train", "test") for x in dsd[s]["language"][:] if x == "ru")
    assert rows["zh_CN"]["parallel_pages"] == len({p for p, lang in zip(dsd["parallel"]["page"][:], dsd["parallel"]["language"][:]) if lang == "zh_CN"})
