"""A realistic tweet source, written to Kinesis with the project's producer (aggregation on).

Owns the generated stream: who tweets (users with Zipf-like activity, each with a home
language), in which language (a distribution rounded from published samples of Twitter's
public stream: English about a third, Japanese about a sixth, then Spanish, Portuguese,
Arabic ... and "und" for text with no language, such as emoji only), what (short phrases in
each language, mentions, hashtags), when (Poisson arrivals at a configurable rate; event time
``created_at``/``timestamp_ms`` a little before the send, so arrival order differs from event
order), and the faults real streams have, each recorded:

* ``late``: created well before it is sent, but within the allowed lateness (a phone that was
  offline for a while);
* ``too_late``: created longer ago than the allowed lateness (it belongs in the late table);
* duplicates: the same tweet (same id, same bytes) sent a second time a moment later, as a
  retrying producer does; same partition key (the user), so it reaches the same shard unless the
  stream was resharded in between.

:func:`plan_tweets` is pure (a seeded random plan); :func:`produce` sends a plan in real time
(lateness is judged against the time Kinesis receives a tweet) and returns exactly what was
sent, acknowledged where, and when; :func:`ground_truth` is the table the counter must report.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from processors.tweets.counting import is_late
from processors.tweets.events import Tweet, encode_tweet, minute_of, snowflake_id

__all__ = [
    "LANGUAGES",
    "GeneratorSettings",
    "Planned",
    "SentTweet",
    "Truth",
    "ground_truth",
    "plan_tweets",
    "produce",
]

#: (Twitter language code, share of tweets), rounded; normalised when drawn.
LANGUAGES: tuple[tuple[str, float], ...] = (
    ("en", 0.32),
    ("ja", 0.16),
    ("es", 0.09),
    ("und", 0.06),
    ("pt", 0.06),
    ("ar", 0.06),
    ("in", 0.04),
    ("ko", 0.03),
    ("tr", 0.03),
    ("fr", 0.025),
    ("th", 0.025),
    ("ru", 0.02),
    ("tl", 0.015),
    ("it", 0.01),
    ("de", 0.01),
    ("hi", 0.01),
    ("nl", 0.005),
    ("pl", 0.005),
    ("fa", 0.005),
    ("zh", 0.005),
)

_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "The weather is nice!",
        "Stop procrastinating!",
        "Go record a course already!",
        "coffee first, then code",
        "just shipped it, fingers crossed",
        "who else is watching the game tonight?",
        "Monday again?!",
    ),
    "ja": (
        "今日はいい天気ですね",
        "おはようございます",
        "ラーメン食べたい",
        "眠い…",
        "お疲れ様でした",
    ),
    "es": ("¡Qué buen día hace hoy!", "Buenos días a todos", "No puedo más con el calor", "Vamos!"),
    "und": ("😂😂😂", "🔥🔥", "👍", "❤️", "😭😭"),
    "pt": ("Bom dia!", "Que calor hoje", "Saudades de vocês", "Partiu praia"),
    "ar": ("صباح الخير", "الحمد لله", "جمعة مباركة", "يا له من يوم جميل"),
    "in": ("Selamat pagi semua", "Lagi macet banget", "Makan siang dulu ah"),
    "ko": ("좋은 아침입니다", "오늘 너무 피곤해", "화이팅!"),
    "tr": ("Günaydın herkese", "Bugün hava çok güzel", "Maç başlıyor"),
    "fr": ("Bonjour tout le monde", "Il fait beau aujourd'hui", "Vivement le week-end"),
    "th": ("สวัสดีตอนเช้า", "วันนี้อากาศดีมาก", "หิวข้าวแล้ว"),
    "ru": ("Доброе утро", "Наконец-то пятница", "Какая погода!"),
    "tl": ("Magandang umaga", "Ang init ngayon", "Salamat po"),
    "it": ("Buongiorno a tutti", "Che bella giornata", "Forza!"),
    "de": ("Guten Morgen zusammen", "Endlich Wochenende", "Was für ein Spiel!"),
    "hi": ("सुप्रभात", "आज मौसम बहुत अच्छा है", "धन्यवाद"),
    "nl": ("Goedemorgen allemaal", "Lekker weer vandaag"),
    "pl": ("Dzień dobry", "Ale dziś pogoda"),
    "fa": ("صبح بخیر", "روز خوبی داشته باشید"),
    "zh": ("早上好", "今天天气很好"),
}
_HASHTAGS = ("#kinesis", "#aws", "#python", "#coffee", "#monday", "#tbt", "#music", "#football")
_SYLLABLES = ("ka", "mi", "to", "ra", "su", "an", "el", "jo", "li", "no", "be", "sa", "yu", "ke")


@dataclass(frozen=True)
class GeneratorSettings:
    """What to generate. Shares are fractions of the original (non-duplicate) tweets."""

    rate: float = 200.0  # tweets per second
    duration_s: float = 15.0
    users: int = 2000
    duplicate_share: float = 0.02
    late_share: float = 0.02
    too_late_share: float = 0.01
    jitter_mean_s: float = 1.0  # on-time tweets: created this long before sending, on average
    allowed_lateness_s: float = 300.0  # places late and too-late tweets clear of the boundary
    seed: int = 1
    start_delay_s: float = 0.0  # no late or too-late tweet before this offset

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0 or self.users < 1:
            raise ValueError("rate, duration_s and users must be positive")
        shares = (self.duplicate_share, self.late_share, self.too_late_share)
        if (
            any(not 0 <= share <= 1 for share in shares)
            or self.late_share + self.too_late_share > 1
        ):
            raise ValueError("shares must be fractions and late + too_late at most 1")
        if self.allowed_lateness_s < 30:
            raise ValueError("allowed_lateness_s below 30 s leaves no room for on-time jitter")


@dataclass(frozen=True)
class Planned:
    """One send: at ``offset_s`` after the start, this tweet (``kind`` on_time, late or
    too_late; ``duplicate`` for the second copy of a tweet already planned)."""

    offset_s: float
    tweet: Tweet
    user_id: int
    kind: str
    duplicate: bool = False

    @property
    def data(self) -> bytes:
        return encode_tweet(self.tweet, self.user_id)


@dataclass
class SentTweet:
    """What happened to one planned send: when it left, when the producer's future resolved,
    and where it landed (all None if it failed)."""

    planned: Planned
    sent_ms: int
    acked_ms: int | None = None
    shard_id: str | None = None
    sequence_number: str | None = None
    sub_sequence_number: int | None = None

    def as_json(self) -> dict[str, Any]:
        tweet = self.planned.tweet
        return {
            "tweet_id": tweet.tweet_id,
            "created_ms": tweet.created_ms,
            "lang": tweet.lang,
            "user": tweet.user,
            "kind": self.planned.kind,
            "duplicate": self.planned.duplicate,
            "sent_ms": self.sent_ms,
            "acked_ms": self.acked_ms,
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "sub_sequence_number": self.sub_sequence_number,
        }


@dataclass
class _User:
    user_id: int
    screen_name: str


@dataclass
class _Population:
    # language -> (users, cumulative activity weights)
    by_language: dict[str, tuple[list[_User], list[float]]] = field(default_factory=dict)


def _population(settings: GeneratorSettings, rng: random.Random) -> _Population:
    population = _Population()
    total = sum(share for _, share in LANGUAGES)
    next_id = 1000
    for lang, share in LANGUAGES:
        size = max(3, round(settings.users * share / total))
        users = []
        for _ in range(size):
            name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
            users.append(_User(next_id, f"{name}_{lang}{next_id % 997}"))
            next_id += 1
        # Zipf-like activity: a few users tweet a lot, most rarely.
        weights = list(itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(size)))
        population.by_language[lang] = (users, weights)
    return population


def plan_tweets(settings: GeneratorSettings, start_ms: int) -> list[Planned]:
    """The whole send plan for a run starting at ``start_ms`` (epoch ms), in send order."""
    rng = random.Random(settings.seed)
    population = _population(settings, rng)
    languages = [lang for lang, _ in LANGUAGES]
    shares = list(itertools.accumulate(share for _, share in LANGUAGES))
    worker = settings.seed % 1024
    used: Counter[int] = Counter()  # Snowflake sequence per millisecond
    lateness = settings.allowed_lateness_s
    plan: list[Planned] = []
    offset = 0.0
    while True:
        offset += rng.expovariate(settings.rate)
        if offset >= settings.duration_s:
            break
        lang = rng.choices(languages, cum_weights=shares)[0]
        users, weights = population.by_language[lang]
        user = rng.choices(users, cum_weights=weights)[0]
        kind = "on_time"
        if offset >= settings.start_delay_s:
            draw = rng.random()
            if draw < settings.late_share:
                kind = "late"
            elif draw < settings.late_share + settings.too_late_share:
                kind = "too_late"
        if kind == "late":
            # Arrives at most 0.6 L after its creation: clear of the boundary by 0.4 L.
            age = rng.uniform(0.2 * lateness, 0.6 * lateness)
        elif kind == "too_late":
            # The end of its minute is at least 1.2 L + 60 s - 60 s before arrival.
            age = rng.uniform(1.2 * lateness + 60, 2.0 * lateness + 120)
        else:
            age = min(rng.expovariate(1 / settings.jitter_mean_s), 10.0)
        created_ms = start_ms + int((offset - age) * 1000)
        sequence = used[created_ms]
        used[created_ms] += 1
        tweet = Tweet(
            str(snowflake_id(created_ms, worker, sequence)),
            created_ms,
            lang,
            user.screen_name,
            _text(rng, lang, population),
        )
        plan.append(Planned(offset, tweet, user.user_id, kind))
        if rng.random() < settings.duplicate_share:
            again = offset + rng.uniform(0.05, 3.0)
            plan.append(Planned(again, tweet, user.user_id, kind, duplicate=True))
    plan.sort(key=lambda planned: planned.offset_s)
    return plan


def _text(rng: random.Random, lang: str, population: _Population) -> str:
    text = rng.choice(_PHRASES[lang])
    if rng.random() < 0.2:
        users, _ = population.by_language[rng.choice(("en", lang))]
        text = f"@{rng.choice(users).screen_name} {text}"
    if rng.random() < 0.25:
        text = f"{text} {rng.choice(_HASHTAGS)}"
    return text


def produce(
    producer: Any,
    stream: str,
    plan: Sequence[Planned],
    start_ms: int,
    on_progress: Callable[[int], None] | None = None,
    flush_timeout_s: float = 60.0,
) -> list[SentTweet]:
    """Send ``plan`` in real time (each tweet at ``start_ms + offset_s``) through ``producer``
    (a ``producer.producer.KinesisProducer``), wait for every future, and return what was sent.

    Raises RuntimeError if any record failed: a tweet that was never written would make the
    ground truth wrong.
    """
    sent: list[SentTweet] = []
    futures: list[Future[Any]] = []
    for planned in plan:
        due_ms = start_ms + planned.offset_s * 1000
        wait = due_ms / 1000 - time.time()
        if wait > 0.002:
            time.sleep(wait)
        entry = SentTweet(planned, int(time.time() * 1000))
        future = producer.add_user_record(stream, planned.tweet.user, planned.data)
        future.add_done_callback(_acknowledge(entry))
        sent.append(entry)
        futures.append(future)
        if on_progress is not None and len(sent) % 50 == 0:
            on_progress(len(sent))
    producer.flush_sync(flush_timeout_s)
    failures = 0
    for entry, future in zip(sent, futures, strict=True):
        error = future.exception(timeout=flush_timeout_s)
        if error is not None:
            failures += 1
            continue
        result = future.result()
        entry.shard_id = result.shard_id
        entry.sequence_number = result.sequence_number
        entry.sub_sequence_number = result.sub_sequence_number
    if on_progress is not None:
        on_progress(len(sent))
    if failures:
        raise RuntimeError(f"{failures} of {len(sent)} tweets were not written")
    return sent


def _acknowledge(entry: SentTweet) -> Callable[[Future[Any]], None]:
    def done(_future: Future[Any]) -> None:
        entry.acked_ms = int(time.time() * 1000)

    return done


@dataclass
class Truth:
    """What the counter must report for a run: (language, minute) -> count, and the same for
    the late table. ``ambiguous`` counts tweets too close to the lateness boundary to say."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    late: Counter[tuple[str, str]] = field(default_factory=Counter)
    records: int = 0
    unique: int = 0
    ambiguous: int = 0

    @property
    def duplicates(self) -> int:
        return self.records - self.unique


def ground_truth(
    sent: Sequence[SentTweet], allowed_lateness_s: float, tolerance_ms: int = 1000
) -> Truth:
    """The expected tables, from what was sent: each tweet id once, in the late table when
    Kinesis received it past the end of its minute plus the allowed lateness. Kinesis's arrival
    time lies between a send and its acknowledgement (give or take ``tolerance_ms``)."""
    truth = Truth(records=len(sent))
    window: dict[str, tuple[Tweet, int, int]] = {}
    for entry in sent:
        tweet = entry.planned.tweet
        acked = entry.acked_ms if entry.acked_ms is not None else entry.sent_ms
        earliest, latest = entry.sent_ms, acked
        if tweet.tweet_id in window:
            _, low, high = window[tweet.tweet_id]
            earliest, latest = min(low, earliest), max(high, latest)
        window[tweet.tweet_id] = (tweet, earliest, latest)
    allowed_ms = int(allowed_lateness_s * 1000)
    for tweet, earliest, latest in window.values():
        early_says = is_late(tweet.created_ms, earliest - tolerance_ms, allowed_ms)
        late_says = is_late(tweet.created_ms, latest + tolerance_ms, allowed_ms)
        if early_says != late_says:
            truth.ambiguous += 1
        table = truth.late if late_says else truth.counts
        table[(tweet.lang, minute_of(tweet.created_ms))] += 1
    truth.unique = len(window)
    return truth


def write_log(path: Path, sent: Sequence[SentTweet]) -> None:
    """The sent tweets as JSON lines (one object per send, duplicates included)."""
    with open(path, "wb") as out:
        for entry in sent:
            out.write(orjson.dumps(entry.as_json()) + b"\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m processors.tweets.generator --stream S``: send tweets, log what was sent."""
    from producer.config import ProducerConfig
    from producer.producer import KinesisProducer

    parser = argparse.ArgumentParser(prog="processors.tweets.generator", description=main.__doc__)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--kinesis-endpoint", help="Kinesis endpoint URL (local servers)")
    parser.add_argument("--region")
    parser.add_argument("--rate", type=float, default=200.0, help="tweets per second (200)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds to send (15)")
    parser.add_argument("--duplicates", type=float, default=0.02, help="share sent twice")
    parser.add_argument("--late", type=float, default=0.02, help="share late, within lateness")
    parser.add_argument("--too-late", type=float, default=0.01, help="share past the lateness")
    parser.add_argument("--allowed-lateness", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", type=Path, help="write what was sent here (JSON lines)")
    args = parser.parse_args(argv)
    settings = GeneratorSettings(
        rate=args.rate,
        duration_s=args.duration,
        duplicate_share=args.duplicates,
        late_share=args.late,
        too_late_share=args.too_late,
        allowed_lateness_s=args.allowed_lateness,
        seed=args.seed,
    )
    config = ProducerConfig(
        region=args.region, kinesis_endpoint=args.kinesis_endpoint, metrics_level="none"
    )
    start_ms = int(time.time() * 1000)
    plan = plan_tweets(settings, start_ms)
    producer = KinesisProducer(config)
    try:
        sent = produce(producer, args.stream, plan, start_ms)
    finally:
        producer.close(timeout=30)
    if args.log:
        write_log(args.log, sent)
    truth = ground_truth(sent, args.allowed_lateness)
    print(
        f"sent {truth.records} tweets ({truth.unique} distinct, {truth.duplicates} duplicates; "
        f"{sum(truth.late.values())} past the allowed lateness)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
