"""The real-text corpus builder on fixture files in the packages' own formats."""

import hashlib
import pathlib

import pytest

from scripts.realtext import build, dedup, fetch, formats

FIX = pathlib.Path(__file__).parent / "fixtures" / "realtext"


def test_dictd_index_and_gcide_cleaning():
    assert [formats.dictd_b64(s) for s in ("A", "B", "BA", "/", "B/")] == [0, 1, 64, 63, 127]
    entries = list(
        formats.dictd_entries((FIX / "gcide.index").read_text(), (FIX / "gcide.dict").read_text())
    )
    # 00-database-* skipped; "Affeared" points at Affear's entry and is not repeated.
    assert [h for h, _ in entries] == ["Affatuate", "Affear"]
    assert [formats.gcide_paragraphs(e) for _, e in entries] == [
        ["Affatuate v. t. [L. ad + fatuus foolish.] To infatuate. [Obs.]"],
        ["Affear v. t. [OE. aferen, AS. [=a]f?ran. See Afeard.] To frighten. [Obs.]"],
    ]


def test_wordnet_synsets_and_questions():
    synsets = list(formats.wordnet_synsets((FIX / "data.noun").read_text()))
    assert [s["offset"] for s in synsets] == ["00001740", "02084071", "02084732"]
    dog = synsets[1]
    assert dog["lemmas"] == ["dog", "domestic dog", "Canis familiaris"]
    assert dog["definition"].startswith("a member of the genus Canis")
    assert dog["examples"] == ["the dog barked all night"]
    assert formats.wordnet_question(dog) == {
        "id": "wn-noun-02084071",
        "question": "question: which noun means: "
        + dog["definition"]
        + '? (as in "the ___ barked all night")',
        "answers": ["dog", "domestic dog", "Canis familiaris"],
    }
    # "informal terms for dogs" is 4 words without a lemma in it: kept, no example.
    assert formats.wordnet_question(synsets[2])["answers"][0] == "pooch"
    leaky = dict(dog, definition="a dog of the domestic kind")
    assert formats.wordnet_question(leaky) is None
    assert (
        formats.question_definition(formats.wordnet_question(dog)["question"])
        == (dog["definition"])
    )


def test_libreoffice_help_alignment_is_by_id_and_deterministic():
    page = "text/shared/find_toolbar.html"
    en = formats.help_page_paragraphs((FIX / "help/en-US" / page).read_text())
    de = formats.help_page_paragraphs((FIX / "help/de" / page).read_text())
    assert "par_id111642423456841" in en and "par_id111642423456841" not in de
    pairs = formats.align_help_pages(page, en, de)
    assert pairs == [
        {
            "id": page + "#par_id3147762",
            "en": "The Find toolbar can be used to quickly search the contents of "
            "LibreOffice documents.",
            "de": "Die Symbolleiste Suchen kann verwendet werden, um schnell den Inhalt von "
            "LibreOffice-Dokumenten zu durchsuchen.",
        },
        {
            "id": page + "#par_id211641581251728",
            "en": "Use the shortcut Ctrl+F to show the toolbar.",
            "de": "Verwenden Sie die Tastenkombination Strg+F, um die Symbolleiste anzuzeigen.",
        },
        {
            "id": page + "#par_id851642423451259",
            "en": "Find Previous Match",
            "de": "Vorherigen Treffer suchen",
        },
    ]  # the heading (2 words), the untranslated and the English-only paragraph are dropped
    splits, stats = build.translation_splits(FIX / "help/en-US", FIX / "help/de")
    again, _ = build.translation_splits(FIX / "help/en-US", FIX / "help/de")
    assert splits == again and stats["pairs_before_dedup"] == 3
    assert sum(len(v) for v in splits.values()) == 3


def test_debian_description_pairs():
    sources = formats.source_packages([(FIX / "Packages").read_text()])
    assert sources == {
        "accerciser": "accerciser",
        "2vcard": "2vcard",
        "0ad-data-common": "0ad-data",
    }
    pairs = {
        p["package"]: p
        for p in formats.description_pairs((FIX / "Translation-en").read_text(), sources)
    }
    assert pairs["2vcard"]["synopsis"] == "convert an addressbook to VCARD file format"
    assert pairs["2vcard"]["description"] == (
        "2vcard converts address books and alias files into the widely-used vCard format. "
        "Currently it can convert from abook, Eudora, Juno, LDIF, mutt, mh and pine.\n"
        "2vcard was developed using Perl."
    )
    assert pairs["0ad-data-common"]["source"] == "0ad-data"
    splits, stats = build.summarize_splits(
        [(FIX / "Translation-en").read_text()], [(FIX / "Packages").read_text()]
    )
    assert stats["pairs_before_dedup"] == 3
    assert all("source" not in row for rows in splits.values() for row in rows)


def test_html_and_pod_prose():
    paragraphs = formats.html_paragraphs((FIX / "manual.html").read_text())
    assert paragraphs == [
        "Sorting HOW TO",
        "Python lists have a built-in list.sort() method that modifies the list in-place.",
        "The sort is stable: equal keys keep their original order.",
        "A plain list item.",
    ]  # code block, navigation, table and footer dropped
    pod = formats.pod_paragraphs((FIX / "perlintro.pod").read_text())
    assert pod == [
        "NAME",
        "perlintro - a brief introduction and overview of Perl",
        "DESCRIPTION",
        "This document is intended to give you a quick overview of the Perl programming "
        "language, along with pointers to further documentation.",
        "Use print to write to the standard output, and <STDIN> to read.",
    ]
    assert build.is_prose(pod[3]) and not build.is_prose("x = {a: b}; y = [c(d)] ;; {}")


def test_splits_follow_the_sha1_of_the_id():
    for ident in ("deb-2vcard", "wn-noun-02084071", "text/shared/a.html"):
        bucket = int(hashlib.sha1(ident.encode()).hexdigest()[:8], 16) / 2**32
        expected = "test" if bucket < 0.05 else "validation" if bucket < 0.1 else "train"
        assert dedup.split_of(ident, 0.05, 0.05) == expected
    labels = [dedup.split_of(f"id-{i}", 0.05, 0.05) for i in range(20000)]
    assert abs(labels.count("test") / 20000 - 0.05) < 0.005
    assert abs(labels.count("validation") / 20000 - 0.05) < 0.005


LONG = (
    "The find toolbar can be used to quickly search the contents of documents and "
    "move the cursor to the next match of the search text in the current document"
)


def test_planted_duplicates_leave_validation_and_test():
    near = LONG.replace("current document", "current file")  # one word in 28 changed
    splits = {
        "train": [{"t": LONG}, {"t": "A different sentence about spreadsheets and charts."}],
        "validation": [{"t": near}, {"t": "Ein ganz anderer Satz, der bleiben soll, bitte sehr."}],
        "test": [{"t": LONG.upper() + "!"}, {"t": "Unrelated words about printing labels here."}],
    }
    kept, removed = dedup.remove_cross_split_duplicates(splits, "t")
    assert removed == {"train": 0, "validation": 1, "test": 1}
    assert [r["t"] for r in kept["validation"]] == [splits["validation"][1]["t"]]
    assert [r["t"] for r in kept["test"]] == [splits["test"][1]["t"]]
    # An unrelated text of the same length is not taken for a near-duplicate.
    assert not dedup.NearDuplicateIndex().seen(LONG)
    index = dedup.NearDuplicateIndex()
    index.add(LONG)
    assert not index.seen(" ".join(reversed(LONG.split())))


def test_pretrain_cleaning_removes_boilerplate_duplicates_and_heldout_overlap():
    held_out = dedup.OverlapIndex()
    held_out.add(LONG)
    boiler = "Copyright 2001-2023, the authors of this manual and its many contributors."
    body = "This paragraph explains how the scheduler chooses the next task to run. " * 4
    docs = [
        ("doc", f"d{i}", [boiler, body if i == 0 else f"Unique prose number {i} " * 10])
        for i in range(3)
    ]
    docs.append(("doc", "d3", [body, "Intro: " + LONG[:120] + " and more words after it."]))
    out, stats = build.pretrain_documents(
        [("doc", iter([d[1:] for d in docs]))], held_out, boilerplate_docs=3
    )
    texts = [d["text"] for split in out.values() for d in split]
    assert all(boiler not in t for t in texts)
    assert sum(t.count("scheduler chooses") for t in texts) == 4  # one copy of the paragraph
    assert stats["removed_boilerplate"] == 3
    assert stats["removed_duplicate"] == 1
    assert stats["removed_overlap_with_task_heldout"] == 1


def test_licence_from_copyright():
    dep5 = "Format: https://x\n\nFiles: *\nLicense: GPL-2+\n\nFiles: a\nLicense: MIT\n"
    assert fetch.licence_of(dep5) == "GPL-2+, MIT"
    assert fetch.licence_of("Distributed under the GPL, see the file.") == "GPL"


@pytest.mark.parametrize("pieces,expected", [(32000, 32128), (31900, 32000), (16000, 16128)])
def test_gin_vocab_size(pieces, expected):
    from scripts.realtext import report

    assert report.vocab_size_for_gin(pieces) == expected


def test_fortunes_split_on_percent_lines():
    text = "Whenever you find yourself on the side\nof the majority, pause.\n\t\t-- Mark Twain\n%\nSecond one.\n%\n"
    assert formats.fortunes(text) == [
        "Whenever you find yourself on the side of the majority, pause. -- Mark Twain",
        "Second one.",
    ]


def test_cached_reader_replays_what_it_read(tmp_path):
    docs = [("a", ["one paragraph"]), ("b", ["two", "paragraphs"])]
    path = tmp_path / "docs" / "src.jsonl"
    assert list(build.cached(path, iter(docs))) == docs
    assert path.exists()
    assert list(build.cached(path, iter([]))) == docs  # the second run reads the cache


def test_pack_writes_xz_files_that_decompress_to_the_originals(tmp_path):
    import lzma

    from scripts.realtext import report

    out, dest = tmp_path / "data", tmp_path / "pack"
    for name in report.BUNDLE_FILES + report.TEST_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f'{{"id": "{name}"}}\n' * 50)
    (out / "manifest.json").write_text("{}")
    sizes = report.pack(out, dest)
    for name in report.BUNDLE_FILES:
        packed = dest / (name + ".xz" if name.endswith(".jsonl") else name)
        raw = (
            lzma.decompress(packed.read_bytes()) if name.endswith(".jsonl") else packed.read_bytes()
        )
        assert raw == (out / name).read_bytes()
        assert sizes["compressed_bytes"][name] == packed.stat().st_size
    assert (dest / "manifest.json").exists()
    gpu = sum(sizes["compressed_bytes"][n] for n in report.BUNDLE_FILES)
    assert sizes["gpu_bundle_mib"] == round(gpu / 2**20, 2)
