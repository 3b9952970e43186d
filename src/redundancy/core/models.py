"""Result models of the pure core. Tasks return ``model_dump(mode="json")`` of these."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RedundancyLevel = Literal["very_low", "low", "medium", "high", "very_high"]

LEVEL_BOUNDS: tuple[tuple[float, RedundancyLevel], ...] = (
    (0.9, "very_high"),
    (0.7, "high"),
    (0.5, "medium"),
    (0.3, "low"),
)
"""Lower bounds of each level; below 0.3 is ``very_low``."""


def redundancy_level(score: float) -> RedundancyLevel:
    """very_low < 0.3 <= low < 0.5 <= medium < 0.7 <= high < 0.9 <= very_high."""
    for bound, level in LEVEL_BOUNDS:
        if score >= bound:
            return level
    return "very_low"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SentencePair(_Model):
    """Two sentences of one text that are near duplicates (``b`` repeats earlier ``a``)."""

    a: int = Field(description="index of the earlier sentence")
    b: int = Field(description="index of the later sentence")
    score: float = Field(ge=0.0, le=1.0)
    text_a: str
    text_b: str


class RepeatedPhrase(_Model):
    phrase: str
    count: int = Field(ge=2)


class AnalysisResult(_Model):
    """How much one text repeats itself.

    ``redundancy_score`` = words in redundant sentences / all words, where a sentence is
    redundant when it scores >= ``threshold`` against any *earlier* sentence.
    """

    content_hash: str
    character_count: int
    word_count: int
    unique_words: int
    sentence_count: int
    lexical_redundancy: float = Field(ge=0.0, le=1.0)
    redundant_sentence_count: int
    redundant_word_count: int
    redundancy_score: float = Field(ge=0.0, le=1.0)
    redundancy_level: RedundancyLevel
    near_duplicate_pair_count: int = Field(
        description="exact copies (each with its first occurrence) plus near-duplicate "
        "pairs among distinct sentences"
    )
    near_duplicate_sentences: list[SentencePair]
    repeated_phrases: list[RepeatedPhrase]
    threshold: float
    algorithm: str
    version: int


class SimilarityResult(_Model):
    """Similarity of two texts under one rapidfuzz scorer (after normalisation)."""

    similarity_score: float = Field(ge=0.0, le=1.0)
    is_similar: bool
    threshold: float
    algorithm: str
    common_words: int = Field(description="distinct words the two texts share")
    text1_hash: str
    text2_hash: str
    version: int


class DocumentPair(_Model):
    """Two documents of a corpus with similarity >= threshold (``a`` < ``b`` by position).

    Without expansion, both are representatives of distinct texts: the pair stands for
    ``copies_a * copies_b`` document pairs, listed by the ``duplicate_groups`` whose
    ``position`` is ``a`` or ``b``.
    """

    a: int
    b: int
    id_a: str
    id_b: str
    score: float = Field(ge=0.0, le=1.0)
    exact: bool = Field(description="same content hash (identical after normalisation)")
    copies_a: int = Field(default=1, ge=1, description="documents with the text of a")
    copies_b: int = Field(default=1, ge=1, description="documents with the text of b")


class DuplicateGroup(_Model):
    """Documents whose texts are identical after normalisation (one content hash): one
    record for the whole group instead of a pair for every two of its members."""

    content_hash: str
    representative: str = Field(description="id of the first member; pairs name it")
    position: int = Field(description="position of the representative")
    count: int = Field(ge=2)
    ids: list[str] = Field(description="every member, in position order")
    positions: list[int]


SearchMode = Literal["all-pairs", "exact", "indexed"]


class _PairsAndGroups(_Model):
    """Fields shared by the in-process and the batch results: pairs, groups, clusters."""

    pairs: list[DocumentPair] = Field(
        description="near-duplicate pairs between distinct texts, between representatives "
        "(every document pair, copies included, when ``expanded``)"
    )
    duplicate_groups: list[DuplicateGroup] = Field(
        default_factory=list, description="identical texts, one record per text"
    )
    document_pair_count: int = Field(
        default=0,
        description="document pairs the result stands for: each pair times its copies, plus "
        "every pair of copies in each group",
    )
    expanded: bool = Field(
        default=False, description="pairs lists document pairs (expand_identical)"
    )
    expansion_cut: str | None = Field(
        default=None, description="why an expanded pair list stops short (the cap)"
    )
    clusters: list[list[str]] = Field(
        description="connected components, ids, size >= 2 (every copy included)"
    )


GROUPED_FIELDS = tuple(_PairsAndGroups.model_fields)
"""Names of the fields a batch result takes over from its NearDuplicateResult."""


class NearDuplicateResult(_PairsAndGroups):
    """Every near-duplicate pair of a corpus, its identical texts and their clusters."""

    document_count: int
    unique_count: int = Field(description="distinct content hashes")
    threshold: float
    algorithm: str
    mode: SearchMode = Field(
        default="all-pairs",
        description="search that ran: all-pairs and exact return every pair; indexed has "
        "precision 1.0 and an estimated recall",
    )


class ItemError(_Model):
    """Why one item of a batch has no analysis: the error's class name and message."""

    type: str
    message: str


class CorpusMatch(_Model):
    """A corpus document similar to a batch item (score 0..1 with the corpus's scorer)."""

    id: str
    score: float


class CorpusSaga(_Model):
    """Where adding a batch to a corpus stands (``redundancy.core.saga.SagaRecord``)."""

    saga_id: str
    state: str
    steps_total: int
    steps_done: int = 0
    cause: str | None = None
    added: int = 0
    replaced: int = 0


class CorpusReport(_Model):
    """A batch checked against a corpus: each item's matches among its earlier content."""

    name: str
    threshold: float
    algorithm: str = Field(description="the corpus's scorer (the matches' scores)")
    mode: Literal["indexed", "exact"]
    matched_documents: int = Field(description="batch items with at least one match")
    matches: int = Field(description="matches listed, over every item")
    saga: CorpusSaga | None = Field(default=None, description="with add: the batch's saga")


class BatchItemResult(_Model):
    """One batch item: its analysis, or the error that prevented it."""

    position: int
    id: str
    analysis: AnalysisResult | None = None
    error: ItemError | None = None
    content_hash: str | None = Field(
        default=None,
        description="of a text whose analysis failed but that is still compared (e.g. "
        "over the work limit); with an analysis, ``analysis.content_hash``",
    )
    corpus_matches: list[CorpusMatch] | None = Field(
        default=None,
        description="with a corpus: its earlier documents similar to this one, best first "
        "(its own id excluded)",
    )

    @property
    def text_hash(self) -> str | None:
        """The item's content hash, or None when it is not comparable text."""
        return self.analysis.content_hash if self.analysis else self.content_hash


class BatchResult(_PairsAndGroups):
    """A whole batch: per-item analyses, failed items, near-duplicate pairs, identical
    texts and clusters."""

    batch_id: str
    document_count: int
    succeeded: int
    failed: int
    unique_count: int
    threshold: float
    algorithm: str
    mode: SearchMode = Field(default="all-pairs", description="near-duplicate search that ran")
    items: list[BatchItemResult] = Field(description="every item in input order")
    corpus: CorpusReport | None = Field(default=None, description="with a corpus")

    @property
    def failed_items(self) -> list[BatchItemResult]:
        return [item for item in self.items if item.error is not None]
