"""The results page of a batch (redundancy.report), rendered without a browser."""

from __future__ import annotations

import pytest

from redundancy.core.models import BatchResult, DocumentPair
from redundancy.errors import InvalidInputError
from redundancy.report import MAX_PAGE_BYTES, TextSpool, compared_ids, render_batch_report, view
from redundancy.report.diff import clip, word_diff
from tests.report_support import (
    BEST_NEAR_PAIR,
    EVIL_ID,
    FAILED_ID,
    KNOWN_DOCUMENTS,
    PAYLOAD,
    RIVER_CLUSTER,
    known_batch,
    parse_html,
    write_known_jsonl,
)


@pytest.fixture(scope="module")
def batch():
    return known_batch()


def summary(root):
    return {
        div.find_all("dt")[0].text: div.find_all("dd")[0].text
        for div in root.by_id("summary").find_all("div")
    }


def test_page_shows_summary_clusters_and_the_best_pair_side_by_side(batch):
    # Given the known batch (three river versions, two cakes, one unrelated, one failed)
    # When its page is rendered with the texts
    root = parse_html(render_batch_report(batch, KNOWN_DOCUMENTS))

    # Then the summary counts it
    stats = summary(root)
    assert stats["documents"] == "7"
    assert stats["failed"] == "1"
    assert stats["near-duplicate pairs"] == "4"
    assert stats["clusters"] == "2"
    assert stats["threshold"] == "0.8"
    assert stats["algorithm"] == "ratio"
    # the largest cluster comes first, with its three members
    rows = root.by_id("clusters").find_all("tbody")[0].find_all("tr")
    assert len(rows) == 2
    members = {li.text.rsplit(" (", 1)[0] for li in rows[0].find_all("li")}
    assert members == RIVER_CLUSTER
    # the default side-by-side view is the best pair, its one changed word highlighted
    first = root.find_all("article", cls="diff")[0]
    assert first.attrs["id"] == "pair-1"
    heads = [h.text for h in first.find_all("h4")]
    assert heads == [f"Document A: {BEST_NEAR_PAIR[0]}", f"Document B: {BEST_NEAR_PAIR[1]}"]
    assert [d.text for d in first.find_all("del")] == ["forty"]
    assert [i.text for i in first.find_all("ins")] == ["fifty"]
    # and a server learns from the batch dict which texts that view needs
    assert compared_ids(batch)[:2] == list(BEST_NEAR_PAIR)
    # the failed item is listed with its error
    failed = root.by_id("failed").find_all("td")
    assert [failed[0].text, failed[1].text] == [FAILED_ID, "EmptyTextError"]


def test_charts_count_every_pair_and_cluster_and_have_tables(batch):
    # Given the known batch
    # When its page is rendered
    root = parse_html(render_batch_report(batch, KNOWN_DOCUMENTS))

    # Then each chart is an accessible picture whose table adds up to the totals
    charts = root.find_all("svg", cls="chart")
    assert len(charts) == 2
    for svg, total in zip(charts, (len(batch["pairs"]), len(batch["clusters"])), strict=True):
        assert svg.attrs["role"] == "img"
        assert svg.find_all("title")[0].text
        figure = next(f for f in root.find_all("figure") if svg in f.walk())
        counts = [int(td.text.replace(",", "")) for td in figure.find_all("td", cls="num")]
        assert sum(counts) == total
        assert len(svg.find_all("rect", cls="bar")) == len(counts)


def test_untrusted_text_and_ids_are_escaped_everywhere(batch):
    # Given documents and ids carrying script and image tags, and a hostile title
    # When the page is rendered
    html = render_batch_report(batch, KNOWN_DOCUMENTS, title="<script>alert(1)</script>")
    root = parse_html(html)

    # Then no markup from them survives: no script, no image, no event handler attribute
    assert "<script" not in html.lower()
    assert not root.find_all("script") and not root.find_all("img")
    assert not [n for n in root.walk() for a in n.attrs if a.lower().startswith("on")]
    # and they are shown as text
    text = root.text
    assert PAYLOAD in text
    assert EVIL_ID in text
    assert FAILED_ID in text
    assert root.find_all("h1")[0].text == "<script>alert(1)</script>"
    # and the page forbids scripts and outside requests even if escaping ever failed
    csp = root.find_all("meta", **{"http-equiv": "Content-Security-Policy"})[0]
    assert "default-src 'none'" in (csp.attrs["content"] or "")
    assert not [n for n in root.walk() if n.attrs.get("src") or n.tag == "link"]


def test_without_texts_the_page_says_they_are_not_available(batch):
    # Given no texts at all
    # When the page is rendered
    root = parse_html(render_batch_report(batch, None))

    # Then the side-by-side part explains instead of failing, and the rest is there
    compare = root.by_id("compare")
    assert "texts are not available" in compare.text
    assert not compare.find_all("article")
    assert root.by_id("clusters").find_all("li")


def test_a_missing_text_is_named_on_its_pair_only(batch):
    # Given the texts of every document but one river version
    texts = {i: t for i, t in KNOWN_DOCUMENTS.items() if i != "river-herald.txt"}

    # When the page is rendered
    root = parse_html(render_batch_report(batch, texts))

    # Then the pairs with it say which text is missing; the others are shown
    articles = root.find_all("article", cls="diff")
    missing = [a for a in articles if a.find_all("p", cls="unavailable")]
    shown = [a for a in articles if a.find_all("pre")]
    assert len(missing) == 2 and len(shown) == 2
    assert all("river-herald.txt is not available" in a.text for a in missing)


def test_a_batch_that_is_not_a_batch_result_is_a_clear_error():
    # Given a dict that lacks the batch's fields
    # When it is rendered
    # Then the error says what is wrong, as our own error class
    with pytest.raises(InvalidInputError, match=r"invalid BatchResult: .*pairs: Field required"):
        render_batch_report({"batch_id": "x", "document_count": 1})


def test_a_batch_without_pairs_renders_with_explanations():
    # Given a batch in which nothing is similar
    batch = {
        **{k: v for k, v in known_batch().items() if k not in ("pairs", "clusters")},
        "pairs": [],
        "clusters": [],
    }

    # When its page is rendered
    root = parse_html(render_batch_report(batch, KNOWN_DOCUMENTS))

    # Then every section says there is nothing to show, and there is no chart
    assert not root.find_all("svg")
    assert "No near-duplicate pairs to compare" in root.by_id("compare").text
    assert "No clusters" in root.by_id("clusters").text


def _pair(a: int, b: int, score: float, exact: bool = False) -> DocumentPair:
    return DocumentPair(a=a, b=b, id_a=f"d{a}", id_b=f"d{b}", score=score, exact=exact)


def _result(pairs: list[DocumentPair], clusters: list[list[str]]) -> BatchResult:
    return BatchResult(
        batch_id="b",
        document_count=100,
        succeeded=100,
        failed=0,
        unique_count=100,
        threshold=0.8,
        algorithm="ratio",
        items=[],
        pairs=pairs,
        clusters=clusters,
    )


def test_compared_pairs_put_near_duplicates_before_exact_copies():
    # Given exact copies scoring 1.0 and fewer near duplicates than the views
    exact = [_pair(n, n + 1, 1.0, exact=True) for n in range(0, 40, 2)]
    near = [_pair(50, 51, 0.9), _pair(52, 53, 0.95)]

    # When the compared pairs are chosen
    chosen = view.compared_pairs(_result(exact + near, []))

    # Then the best near duplicate is first (the default view), exact copies fill up
    assert [(p.a, p.b) for p in chosen[:2]] == [(52, 53), (50, 51)]
    assert len(chosen) == view.COMPARED_PAIRS
    assert all(p.exact for p in chosen[2:])
    assert compared_ids(_result(exact + near, []))[:4] == ["d52", "d53", "d50", "d51"]


def test_score_histogram_bins_every_score_between_threshold_and_one():
    # Given scores at the threshold, at 1 and between
    scores = [0.8, 0.8, 0.85, 0.999, 1.0]

    # When they are binned
    bins = view.score_histogram(scores, 0.8)

    # Then none is lost, the ends land in the first and last bins
    assert len(bins) == view.SCORE_BINS
    assert sum(c for _, c in bins) == len(scores)
    assert bins[0] == ("0.800", 2)
    assert bins[-1][1] == 2


def test_cluster_sizes_are_bucketed_up_to_the_largest():
    # Given clusters of sizes 2, 2, 3, 7 and 1,500
    clusters = [["x"] * n for n in (2, 2, 3, 7, 1_500)]

    # When they are counted by size
    counts = dict(view.size_distribution(clusters))

    # Then each lands in its bucket and the last bucket in use ends the list
    assert counts["2"] == 2 and counts["3"] == 1 and counts["6\N{EN DASH}10"] == 1
    assert counts["1,001+"] == 1
    assert sum(counts.values()) == len(clusters)
    assert dict(view.size_distribution([["a", "b"]])) == {"2": 1}


def test_word_diff_marks_changed_words_and_clips_at_a_word_boundary():
    # Given two texts one word apart, longer than the cap
    a = "alpha beta gamma delta epsilon " * 10
    b = a.replace("gamma", "GAMMA", 1)

    # When they are compared with a cap in the middle of a word
    diff = word_diff(a, b, 13)

    # Then the cut falls before the word, the sides say so, the change is marked
    assert clip(a, 13) == "alpha beta "
    assert diff.left.truncated and diff.left.total_chars == len(a)
    assert diff.left.shown_chars == len("alpha beta ")
    full = word_diff(a, b, 10_000)
    assert [s.text for s in full.left.segments if s.changed] == ["gamma"]
    assert [s.text for s in full.right.segments if s.changed] == ["GAMMA"]
    assert "".join(s.text for s in full.right.segments) == b


def test_a_long_pair_is_capped_on_the_page_and_says_so(batch):
    # Given the best pair's texts made 20 times longer than the cap
    long_a = KNOWN_DOCUMENTS[BEST_NEAR_PAIR[0]] * (20 * view.MAX_DIFF_CHARS // 400)
    texts = {**KNOWN_DOCUMENTS, BEST_NEAR_PAIR[0]: long_a}

    # When the page is rendered
    first = parse_html(render_batch_report(batch, texts)).by_id("pair-1")

    # Then side A shows at most the cap and says how much it left out
    side_a = first.find_all("pre")[0].text
    assert len(side_a) <= view.MAX_DIFF_CHARS
    assert f"of {len(long_a):,} characters" in first.text


def adversarial_batch(documents: int) -> tuple[dict, dict[str, str]]:
    """A batch built to make the page as large as it can be: long ids of characters that
    escape to 5 bytes or encode to 4, big clusters, many pairs and failures, and texts
    whose every other character differs (a highlight tag per character)."""
    noise = "<>&\"'\U0001f600" * 40
    ids = [f"{n:06d}{noise}" for n in range(documents)]
    items = [
        {
            "position": n,
            "id": doc,
            "error": {"type": noise, "message": noise * 5} if n % 100 == 0 else None,
        }
        for n, doc in enumerate(ids)
    ]
    clusters, pairs = [], []
    for start in range(0, 30_000, 1_000):  # 30 clusters of 1,000
        clusters.append(ids[start : start + 1_000])
        pairs += [(start, m) for m in range(start + 1, start + 1_000)]
    for start in range(30_000, documents - 1, 2):  # the rest in pairs
        clusters.append([ids[start], ids[start + 1]])
        pairs.append((start, start + 1))
    batch = {
        "batch_id": noise,
        "document_count": documents,
        "succeeded": documents - len(items[::100]),
        "failed": len(items[::100]),
        "unique_count": documents,
        "threshold": 0.8,
        "algorithm": "ratio",
        "mode": "indexed",
        "items": items,
        "pairs": [
            {"a": a, "b": b, "id_a": ids[a], "id_b": ids[b], "score": 0.99, "exact": False}
            for a, b in pairs
        ],
        "clusters": clusters,
    }
    needed = compared_ids(BatchResult.model_validate(batch))
    texts = {doc: ("&<" if n % 2 else "&>") * view.MAX_DIFF_CHARS for n, doc in enumerate(needed)}
    return batch, texts


@pytest.mark.slow
def test_the_page_of_a_100k_document_batch_stays_within_its_bound():
    # Given a 100,000-document batch built to make the page as large as possible
    batch, texts = adversarial_batch(100_000)

    # When its page is rendered
    html = render_batch_report(batch, texts, title="<" * 10_000)
    root = parse_html(html)

    # Then the page stays under the documented bound, with every list capped
    assert len(html.encode("utf-8")) <= MAX_PAGE_BYTES
    assert len(root.by_id("pairs").find_all("tbody")[0].find_all("tr")) == view.TOP_PAIRS
    clusters = root.by_id("clusters").find_all("tbody")[0].find_all("tr")
    assert len(clusters) == view.TOP_CLUSTERS
    assert all(len(row.find_all("li")) == view.CLUSTER_MEMBERS for row in clusters)
    assert len(root.find_all("article", cls="diff")) == view.COMPARED_PAIRS
    assert len(root.by_id("failed").find_all("tbody")[0].find_all("tr")) == view.FAILED_ITEMS
    # while the histogram still counts every pair
    assert summary(root)["near-duplicate pairs"] == f"{len(batch['pairs']):,}"


def test_text_spool_gives_back_each_text_by_id():
    # Given texts added to a spool, one of them not text
    with TextSpool() as spool:
        spool.add("a", "first \U0001f600 text")
        spool.add("b", "second")
        spool.add("c", b"bytes are not text")
        spool.add("d", "lone \ud800 surrogate")

        # When they are read back
        # Then each text comes back whole; values that are not text are absent
        assert spool["b"] == "second"
        assert spool["a"] == "first \U0001f600 text"
        assert spool.get("c") is None and spool.get("d") is None
        assert sorted(spool) == ["a", "b"] and len(spool) == 2


def test_crd_batch_report_writes_the_page_with_the_texts_it_read(tmp_path):
    # Given the known documents as JSONL (one of them fails)
    from click.testing import CliRunner

    from redundancy.cli import EXIT_ITEMS_FAILED, cli

    src = write_known_jsonl(tmp_path / "docs.jsonl")
    page, out = tmp_path / "report.html", tmp_path / "results.jsonl"

    # When crd batch runs on the embedded default with --report and --out together
    result = CliRunner().invoke(cli, ["batch", str(src), "--report", str(page), "--out", str(out)])

    # Then the page shows the best pair's difference from the texts the command read
    assert result.exit_code == EXIT_ITEMS_FAILED, result.output
    assert f"wrote {page}" in result.output.replace("\n", "")
    root = parse_html(page.read_text(encoding="utf-8"))
    assert [d.text for d in root.by_id("pair-1").find_all("del")] == ["forty"]
    assert len(root.find_all("pre", cls="text")) == 2 * len(root.find_all("article"))
    assert summary(root)["documents"] == "7"
    # and the JSONL output, fed by the same documents, still has every pair
    assert out.read_text().count('"record": "pair"') == 4


def test_crd_batch_report_into_a_missing_folder_fails_before_the_batch(tmp_path):
    # Given a report path in a folder that does not exist
    from click.testing import CliRunner

    from redundancy.cli import EXIT_USAGE, cli

    src = write_known_jsonl(tmp_path / "docs.jsonl")

    # When crd batch is asked to write it
    result = CliRunner().invoke(
        cli, ["batch", str(src), "--report", str(tmp_path / "nowhere" / "r.html"), "--json"]
    )

    # Then it is a usage error naming the folder, and no batch ran
    assert result.exit_code == EXIT_USAGE
    assert "no folder" in result.output and "nowhere" in result.output
    assert '"pairs"' not in result.output
