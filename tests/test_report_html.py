"""The reports' one look (``components/report_html.py``): the page structure every HTML
report shares, and hostile values — generated — in every slot a report fills (title,
banner, cards, table heads and cells, row data, paragraphs, lists, code blocks, section
titles, footnotes) coming out as text: the parsed page has exactly the elements and
attributes of the same page built from harmless values, and each text is the value
itself (redacted, line breaks normalised). The rendered DOM is checked in Chromium by
tests/pipelines/test_reports_browser.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.logs import redact
from tune2serve.components.report_html import (
    STYLESHEET,
    Badge,
    Card,
    Code,
    Items,
    Markup,
    Para,
    Row,
    Section,
    Table,
    Verdict,
    page,
)

from tests.test_markdown import HOSTILE_TEXT

SLOTS = 17  # values a page below takes


def build(v: list[str]) -> str:
    """A page using every kind of slot, value ``v[i]`` in slot i."""
    table = Table((v[0], "b"), [Row((v[1], Code(v[2]), Badge(v[3], "fail"), 7), tone="fail", data={"code": v[4]}),
                                (None, 1.5, v[5], "x")], id="t")
    sections = [Section(v[6], [v[7], Para(v[8], "fail"), Items([v[9], "y"]), Code(v[10]), table,
                               Section(v[11], ["inner"], id="inner", data={"verdict": v[12]})], id="s1")]
    return page(v[13], Verdict(v[14], "pass", detail=v[15], data={"ok": "true"}),
                [Card(v[16], "value"), Card("label", 3, "warn")], sections, footnotes=["method"], kind="test")


class Tokens(HTMLParser):
    """The page as (kind, tag, attribute names) and data events, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.structure: list[tuple[str, str, tuple[str, ...]]] = []
        self.data: list[str] = []
        self.attrs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.structure.append(("start", tag, tuple(sorted(name for name, _ in attrs))))
        self.attrs.append(dict(attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        self.structure.append(("end", tag, ()))

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def handle_comment(self, data: str) -> None:
        self.structure.append(("comment", data, ()))

    @classmethod
    def of(cls, html: str) -> Tokens:
        parser = cls()
        parser.feed(html)
        parser.close()
        return parser


def shown(value: str) -> str:
    """What a reader sees of ``value``: redacted, CR/CRLF as LF, other controls as spaces."""
    s = redact(value).replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", " ", s)


@settings(max_examples=300, deadline=None)
@given(st.lists(HOSTILE_TEXT.filter(bool), min_size=SLOTS, max_size=SLOTS))
def test_hostile_values_are_text_in_every_slot(values: list[str]) -> None:
    markers = [f"MARK{i}X" for i in range(SLOTS)]
    benign, hostile = Tokens.of(build(markers)), Tokens.of(build(values))
    assert hostile.structure == benign.structure  # no element, attribute or comment came from a value
    texts = dict(zip(benign.data, hostile.data, strict=True))
    for marker, value in zip(markers, values, strict=True):
        if marker in texts:
            assert texts[marker] == shown(value)
    attrs = {k: (a, b) for a_map, b_map in zip(benign.attrs, hostile.attrs, strict=True)
             for k, a, b in ((k, a_map[k], b_map[k]) for k in a_map)}
    assert attrs["data-code"] == (markers[4], shown(values[4]))
    assert attrs["data-verdict"] == (markers[12], shown(values[12]))


def test_the_page_has_the_one_structure_and_stylesheet() -> None:
    html = build([f"v{i}" for i in range(SLOTS)])
    assert html.startswith("<!DOCTYPE html>\n") and html.count("<style>") == 1 and STYLESHEET in html
    assert '<main class="report" data-report="test"><header id="verdict" class="banner pass" data-ok="true">v14' \
           '<small>v15</small></header><section id="summary" class="cards"><div class="card">' in html
    assert '<div class="card warn"><div class="label">label</div><div class="value">3</div></div>' in html
    assert '<section id="s1"><h2>v6</h2><p>v7</p><p class="fail">v8</p><ul><li>v9</li><li>y</li></ul>' \
           "<pre><code>v10</code></pre>" in html
    assert '<section id="inner" data-verdict="v12"><h3>v11</h3><p>inner</p></section>' in html  # one level down
    assert ('<tr class="fail" data-code="v4"><td>v1</td><td><code>v2</code></td>'
            '<td><span class="badge fail">v3</span></td><td class="num">7</td></tr>') in html
    assert '<tr><td><span class="none">—</span></td><td class="num">1.5</td>' in html
    assert '<footer id="footnotes"><ol><li>method</li></ol></footer>' in html
    # self-contained: no script, no link or image to fetch
    assert not re.search(r"<script|<link|<img|<iframe|\b(src|href)=|url\(|@import", html)


def test_markup_is_inserted_and_strings_are_not() -> None:
    chart = Markup('<svg class="chart"><text>a &amp; b</text></svg>')
    html = page("t", Verdict("h", "fail"), [], [Section("c", [chart, '<svg class="chart">'])])
    assert '<section><h2>c</h2><svg class="chart"><text>a &amp; b</text></svg>' \
           "<p>&lt;svg class=&quot;chart&quot;&gt;</p></section>" in html


def test_secrets_are_redacted_wherever_they_appear() -> None:
    token = "ya29." + "a" * 40
    html = page(token, Verdict(f"Bearer {token}", "fail", detail=f"https://user:pw@host/{token}"),
                [Card("token", token)], [Section("s", [Code(f'{{"authorization": "Bearer {token}"}}')])])
    assert token not in html and "[redacted]" in html
