"""Every Redis key this project writes, in one place (arq's convention).

All keys live under ``redundancy:<area>:v1:``; bump the version of an area when its
stored format changes so old and new workers never read each other's data.
"""

from __future__ import annotations

ROOT = "redundancy"


def area_prefix(area: str, version: int = 1) -> str:
    """``redundancy:<area>:v<version>:`` -- the namespace of one area."""
    return f"{ROOT}:{area}:v{version}:"


BATCH = area_prefix("batch")
DELIVERIES = area_prefix("deliveries")


def batch_docs(batch_id: str) -> str:
    """Hash of position -> JSON ``{"id", "text"}`` staged for one batch."""
    return f"{BATCH}{batch_id}:docs"


def batch_progress(batch_id: str) -> str:
    """Hash of a batch's analysed documents and finished search sub-tasks (the CLI's
    progress)."""
    return f"{BATCH}{batch_id}:progress"


def batch_lsh_partition(batch_id: str, partition: int) -> str:
    """Hash of chunk -> LSH band records (key, position) whose key falls in a partition."""
    return f"{BATCH}{batch_id}:lsh:part:{partition}"


def batch_lsh_candidates(batch_id: str, chunk: int) -> str:
    """Hash of partition -> candidate pairs whose lower position is in one chunk."""
    return f"{BATCH}{batch_id}:lsh:cand:{chunk}"


def batch_keys(batch_id: str, *, partitions: int = 0, chunks: int = 0) -> list[str]:
    """Every key one batch may write: documents, progress and, for an indexed search
    over ``chunks`` chunks in ``partitions`` partitions, its LSH tables (deleted by name:
    a SCAN would walk the whole result-backend database)."""
    return [
        batch_docs(batch_id),
        batch_progress(batch_id),
        *(batch_lsh_partition(batch_id, p) for p in range(partitions)),
        *(batch_lsh_candidates(batch_id, c) for c in range(chunks)),
    ]


def batch_texts(batch_id: str) -> str:
    """Hash of document id -> JSON ``{"id", "text"}``: texts of a finished batch's best
    pairs, kept for the results page's diff view after the staged documents are gone.
    Not in ``batch_keys``: it outlives the merge (BATCH_TTL)."""
    return f"{BATCH}{batch_id}:texts"


def delivery_counter(task_id: str, retries: int) -> str:
    """How many times one attempt of a task message has been delivered."""
    return f"{DELIVERIES}{task_id}:{retries}"


DEAD_LETTERS = area_prefix("dead-letters")


def task_dead_letters() -> str:
    """Stream of task messages the message guard rejected on a Redis broker (RabbitMQ
    dead-letters them to its own queue): reason, headers and the body as received."""
    return f"{DEAD_LETTERS}tasks"


def event_dead_letters() -> str:
    """Stream of events an event handler gave up on (``crd events handle``): the
    envelope as received, the handler, its group, the error, the tries and the time."""
    return f"{DEAD_LETTERS}events"


# --- cache -----------------------------------------------------------------------------
# A cache entry lives at ``redundancy:<prefix>:v1:<key>``; ``prefix`` is the cache's
# namespace ("cache" unless the caller names another). Its locks and shared counters sit
# in areas of their own, so clearing a namespace by pattern never touches them.

CACHE_PREFIX = "cache"
CACHE_LOCKS = area_prefix("cache-lock")
CACHE_STATS = area_prefix("cache-stats") + "counters"
"""Hash ``<cache_type>:<hits|misses|errors|sets>`` -> count, summed over every process."""

NON_CACHE_AREAS = frozenset(
    {
        "batch",
        "deliveries",
        "dead-letters",
        "sessions",
        "cache-lock",
        "cache-stats",
        "events",
        "metrics",
        "corpus",
        "handlers",
    }
    | {"api", "ratelimit"}  # the HTTP gateway's areas (see the end of this module)
)
"""Areas owned by other parts: never a cache namespace (a pattern clear would wipe them)."""


def cache_key(prefix: str, key: str) -> str:
    return f"{area_prefix(prefix)}{key}"


def cache_lock(prefix: str, key: str) -> str:
    """The short compute-once lock of ``get_or_set`` for one cache entry."""
    return f"{CACHE_LOCKS}{prefix}:{key}"


def analysis_result(text_sha256: str, threshold: float, algorithm: str, version: int) -> str:
    """Cache key (in the "cache" namespace) of an AnalysisResult.

    The digest is of the *exact* text, not the normalised ``content_hash``: a result
    quotes sentences and counts characters of the text as sent, so two texts differing
    only in case or spacing must not share an entry.
    """
    return f"analysis:v{version}:{algorithm}:{threshold!r}:{text_sha256}"


def similarity_result(
    hash_a: str, hash_b: str, threshold: float, algorithm: str, version: int
) -> str:
    """Cache key of a SimilarityResult: every field of it depends only on the normalised
    texts, so their content hashes (in order) identify it."""
    return f"similarity:v{version}:{algorithm}:{threshold!r}:{hash_a}:{hash_b}"


# --- sessions --------------------------------------------------------------------------

SESSIONS = area_prefix("sessions")


def session(session_id: str) -> str:
    """Hash: ``m:<field>`` session facts, ``d:<key>`` JSON values of the caller's data."""
    return f"{SESSIONS}id:{session_id}"


def session_jobs(session_id: str) -> str:
    """List of the job ids submitted in one session (oldest first, capped)."""
    return f"{SESSIONS}jobs:{session_id}"


def user_sessions(user_id: str) -> str:
    """Sorted set: the user's session ids scored by their expiry (ms since the epoch)."""
    return f"{SESSIONS}user:{user_id}"


EVENTS = area_prefix("events")


def event_stream(topic: str) -> str:
    """The Redis Streams event broker's stream (``EVENTS_TOPIC``)."""
    return f"{EVENTS}stream:{topic}"


def outbox() -> str:
    """Stream of events written by finished tasks and not yet relayed to the event broker."""
    return f"{EVENTS}outbox"


def outbox_dead_letters() -> str:
    """Outbox entries the relay could never publish (unreadable, or refused by the broker)."""
    return f"{EVENTS}outbox:dead"


def relay_lease() -> str:
    """Lock held by the one relay that drains the outbox (order per aggregate needs one)."""
    return f"{EVENTS}outbox:lease"


HANDLERS = area_prefix("handlers")


def handler_claim(group: str, handler: str, event_id: str) -> str:
    """Hash: one event's claim by one handler of one group (``redundancy.events.claims``):
    state (running, failed, done, dead), owner, lease end, tries, last error."""
    return f"{HANDLERS}claim:{group}:{handler}:{event_id}"


METRICS = area_prefix("metrics")


def metrics_queue_reporter() -> str:
    """Lease naming the one worker that reports cluster-wide queue lengths."""
    return f"{METRICS}queue-reporter"


# --- HTTP API gateway (redundancy.api) ---------------------------------------------------

API = area_prefix("api")


def api_key(digest: str) -> str:
    """Hash of one API key, found by the sha256 of the key: ``key_id``, ``user_id``."""
    return f"{API}key:{digest}"


def api_key_id(key_id: str) -> str:
    """String: the digest of the key with this public id (revocation by id)."""
    return f"{API}key-id:{key_id}"


def api_user_keys(user_id: str) -> str:
    """Hash of key id -> JSON facts (name, created, revoked) of one user's keys."""
    return f"{API}user-keys:{user_id}"


def api_job(job_id: str) -> str:
    """Hash: who submitted a job, its kind and size (ownership; expires after BATCH_TTL)."""
    return f"{API}job:{job_id}"


def api_key_jobs(key_id: str) -> str:
    """List of the job ids submitted with one API key, newest last (capped); a user's
    jobs are those of their keys (``api_user_keys``)."""
    return f"{API}key-jobs:{key_id}"


RATELIMIT = area_prefix("ratelimit")


def rate_limit(key_id: str) -> str:
    """GCRA state of one API key: its theoretical arrival time (ms, server clock)."""
    return f"{RATELIMIT}gcra:{key_id}"


def daily_quota(key_id: str) -> str:
    """Hash: the UTC ``day`` (days since the epoch, server clock) and the ``documents``
    and ``bytes`` one API key submitted that day; a new day starts from zero."""
    return f"{RATELIMIT}quota:{key_id}"


# --- corpora (redundancy.corpus) -----------------------------------------------------
# A corpus is sharded: shard ``s`` of corpus ``c`` keeps every key under the hash tag
# ``{c:s}``, so on Redis Cluster one shard is one slot (its Lua scripts are atomic) and
# the shards of one corpus spread over the cluster. Layout under ``corpus_shard(c, s)``:
#   events          stream: the shard's event store (EVENT_STORE=redis), never trimmed
#   gen             the generation of the index that queries read (a rebuild adds one)
#   g<n>:meta       hash: applied store position, next slot, live documents, LSH state
#   g<n>:ids        hash: document id -> "<slot>:<content hash prefix>"
#   g<n>:docs       hash: slot -> "<document id>\0<normalised text>"
#   g<n>:f:<c>      string: feature records (length, histogram) of slots c*R..c*R+R-1
#   g<n>:b:<k>      hash: LSH bucket k, band field -> comma-separated slots
# Lua scripts receive the shard prefix and append these suffixes (CORPUS_SUFFIXES).

CORPUS = area_prefix("corpus")
CORPUS_SUFFIXES = {
    "events": "events",
    "gen": "gen",
    "meta": "meta",
    "ids": "ids",
    "docs": "docs",
    "feat": "f:",
    "bucket": "b:",
}
"""Key suffixes of one shard (see above); the Lua scripts are built from these."""


def corpus_registry() -> str:
    """Hash: corpus name -> its configuration (JSON)."""
    return f"{CORPUS}registry"


def corpus_shard(corpus: str, shard: int) -> str:
    """Prefix of every key of one shard of a corpus (hash tag ``{corpus:shard}``)."""
    return f"{CORPUS}{{{corpus}:{shard}}}:"


def corpus_events(corpus: str, shard: int) -> str:
    """The shard's event stream (the event store when EVENT_STORE=redis)."""
    return corpus_shard(corpus, shard) + CORPUS_SUFFIXES["events"]


def corpus_generation(corpus: str, shard: int) -> str:
    """The generation number of the shard's live index."""
    return corpus_shard(corpus, shard) + CORPUS_SUFFIXES["gen"]


def corpus_index(corpus: str, shard: int, generation: int, part: str) -> str:
    """One key of a generation of a shard's index: ``part`` is a CORPUS_SUFFIXES name
    (for ``bucket`` and ``feat``, append the bucket or chunk number)."""
    return f"{corpus_shard(corpus, shard)}g{generation}:{CORPUS_SUFFIXES[part]}"


# A batch added to a corpus is a saga (redundancy.corpus.saga); its keys share the hash
# tag ``{c:saga}``, so one corpus's sagas live in one slot of a Redis Cluster:
#   job:<saga id>   hash: the saga's fields, and ``step:<n>`` -> the step's record (JSON)
#   jobs            sorted set: saga id -> start time (``crd corpus jobs``)
#   lease           string: the id of the saga adding to the corpus now (one at a time)


def corpus_sagas_prefix(corpus: str) -> str:
    return f"{CORPUS}{{{corpus}:saga}}:"


def corpus_saga(corpus: str, saga_id: str) -> str:
    """Hash: one saga's state and its steps' records."""
    return f"{corpus_sagas_prefix(corpus)}job:{saga_id}"


def corpus_saga_index(corpus: str) -> str:
    """Sorted set: the corpus's saga ids by start time."""
    return f"{corpus_sagas_prefix(corpus)}jobs"


def corpus_saga_lease(corpus: str) -> str:
    """The id of the saga that holds the corpus (one saga adds to a corpus at a time)."""
    return f"{corpus_sagas_prefix(corpus)}lease"
