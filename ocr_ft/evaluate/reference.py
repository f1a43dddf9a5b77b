"""PubTabNet's published TEDS, re-derived in pure Python: the oracle the fast metric is checked against and
the baseline the benchmark times it against.

Same algorithm as the published metric: lxml HTML parse (comments removed), the first ``body/table``, one
tree node per element with ``td`` a leaf holding its content tokens (characters and tags), apted with the
metric's rename cost (1 for a different tag/colspan/rowspan, else normalised Levenshtein of the tokens), and
``1 - distance / max(elements under each table)``. A bare ``<table>`` is wrapped in ``<html><body>`` as the
metric expects. Slow by design: the Levenshtein is a textbook Python loop computed on every call.
Like the published code it divides by zero when neither table has an element below it (two empty tables);
:mod:`ocr_ft.evaluate.teds_metric` scores that case 1.0.
"""

from __future__ import annotations

from apted import APTED, Config
from lxml import html as lxml_html


class _Node:
    def __init__(self, tag, colspan=None, rowspan=None, content=None):
        self.tag, self.colspan, self.rowspan, self.content = tag, colspan, rowspan, content
        self.children = []


def levenshtein(a, b) -> int:
    """Edit distance of two sequences (dynamic programme, one row at a time)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


class _Costs(Config):
    def rename(self, n1, n2):
        if (n1.tag, n1.colspan, n1.rowspan) != (n2.tag, n2.colspan, n2.rowspan):
            return 1.0
        if n1.tag == "td" and (n1.content or n2.content):
            return float(levenshtein(n1.content, n2.content)) / max(len(n1.content), len(n2.content))
        return 0.0


def _tokens(el, out):
    out.append(f"<{el.tag}>")
    out.extend(el.text or "")
    for child in el:
        _tokens(child, out)
    out.append(f"</{el.tag}>")
    if el.tag != "td":
        out.extend(el.tail or "")


def _tree(el, structure_only: bool) -> _Node:
    if el.tag == "td":
        tokens: list[str] = []
        if not structure_only:
            _tokens(el, tokens)
            tokens = tokens[1:-1]
        return _Node("td", int(el.get("colspan", "1")), int(el.get("rowspan", "1")), tokens)
    node = _Node(el.tag)
    node.children = [_tree(c, structure_only) for c in el]
    return node


def _first_table(html: str):
    if "<body" not in html.lower():
        html = f"<html><body>{html}</body></html>"
    parser = lxml_html.HTMLParser(remove_comments=True, encoding="utf-8")
    found = lxml_html.fromstring(html, parser=parser).xpath("body/table")
    return found[0] if found else None


def reference_teds(pred: str, true: str, structure_only: bool = False) -> float:
    """TEDS (or TEDS-S) of ``pred`` against ``true``, the published way."""
    if not pred or not true:
        return 0.0
    p, t = _first_table(pred), _first_table(true)
    if p is None or t is None:
        return 0.0
    n_nodes = max(len(p.xpath(".//*")), len(t.xpath(".//*")))
    distance = APTED(_tree(p, structure_only), _tree(t, structure_only), _Costs()).compute_edit_distance()
    return 1.0 - float(distance) / n_nodes


def reference_scores(pred: str, true: str) -> tuple[float, float]:
    """``(TEDS, TEDS-S)``."""
    return reference_teds(pred, true, False), reference_teds(pred, true, True)
