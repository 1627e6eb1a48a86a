"""The generator's world: a synthetic dataset in the KuaiSAR layout, with planted, documented
structure (the generate stage writes it; the truth ranker reads its planted rules).

Planted truth (what models can learn and what tests check):
- Each user has 3 feed-interest categories (interest 1.0, 0.7, 0.5) and 3 search-interest
  categories; each search-interest slot equals the feed interest in that slot with probability
  `search_rec_overlap`, else it is a category outside the feed interests. With
  `search_interests` "independent" the three are drawn by category popularity alone, as the
  feed interests are, so they are feed interests only as often as chance makes them (the
  control in which searches carry no information about the feed).
- Feed click logit = base + 3.0 * interest(user, category) + 0.6 * item quality + user bias
  (from onehot_feat1) + `search_effect` if the user searched that category within the last
  `search_effect_hours` + noise. `base` is calibrated so that clicks are ~1:1.
- `search_serving` (0.3 by default) of the feed impressions show the category of the user's
  last search in the previous `search_effect_hours`: a feed that answers searches, as KuaiSAR's
  own `search` / `search_item_related` flags say a real one does (a feed item served after a
  search, related to it); the release's shares of those flags are not on this machine to
  calibrate against, so 0.3 is chosen for what it plants, not measured. With it, searches are
  worth +0.037 NDCG@10 to the generator's own truth ranker on the default data (BENCHMARKS.md,
  "Search-aware planted-truth experiment"); at 0 (the effect on clicks alone) about +0.004.
  Optional (0 by default, and then the draws are as without it): `search_novelty` of the
  search sessions query a popularity-drawn category instead of one of the user's search
  interests (passing intents).
- like, follow, forward and long view happen only after a click; each has logit
  bias + 2 * (rho * shared + sqrt(1 - rho^2) * own), rho = `label_correlation`, where shared is the
  standardised click signal and own is task-specific: like <- author and user taste, follow <-
  author and onehot_feat2, forward <- second-level category and onehot_feat1, long view <- short
  duration and quality. Long view is written as playing_time under the release's valid-play rule.
- Search clicks depend on query-item relevance (result in the queried category), quality and
  position; ~60% of sessions have a click. Search returns item types the feed never serves
  (src_inter.item_type USER, LIVE, COMMODITY, MUSIC, ADVERT: ~10% of search rows), and, as in the
  release, those items have no row in item_features.csv, whose own `item_type` is the release's
  NORMAL or AD (5% of items), not src_inter's.
- Per-user activity is log-normal (`activity_skew`); feed items come in requests that share one
  served timestamp (ties).
Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.config.params import GenerateParams, beijing_ms
from tasks.kuaisar.schema import FEED_ITEM_TYPES, ITEM_TYPES, RAW_FILES, format_idlist

INTEREST = np.array([1.0, 0.7, 0.5])
SLOT_P = np.array([0.5, 0.3, 0.2])
# where a feed impression's category comes from: feed interests, search interests, popularity
SERVE_FROM = np.array([0.45, 0.15, 0.40])
UPLOAD_TYPES = ("ShortImport", "LongImport", "Camera", "Web", "LongPicture")
SEARCH_SOURCES = ("USER_INPUT", "HISTORY", "RECOMMEND_QUERY", "SUGGEST")
TARGET_RATE_AFTER_CLICK = {"like": 0.15, "follow": 0.06, "forward": 0.06, "long_view": 0.55}
DAY_MS = 86_400_000
CLICK_NOISE = 0.5  # std of the feed click logit's noise
AD_SHARE = 0.05  # item_features.item_type AD (else NORMAL)


@dataclass(frozen=True)
class World:
    """Latent truth behind the logs (index-based: user u, item i, category c)."""

    cat_pop: np.ndarray  # (C,)
    item_cat: np.ndarray  # (I,)
    item_sub: np.ndarray  # (I,) global second-level index
    item_type: np.ndarray  # (I,) str
    item_author: np.ndarray  # (I,) 0 = none
    item_quality: np.ndarray  # (I,)
    item_duration: np.ndarray  # (I,) ms
    feed_cats: np.ndarray  # (U, 3)
    search_cats: np.ndarray  # (U, 3)
    user_activity: np.ndarray  # (U,)
    user_search_activity: np.ndarray  # (U,)
    feat1: np.ndarray  # (U,)
    feat2: np.ndarray  # (U,)
    user_bias: np.ndarray  # (U,)
    user_taste: np.ndarray  # (U,)
    author_like: np.ndarray  # (A+1,)
    author_follow: np.ndarray  # (A+1,)
    sub_forward: np.ndarray  # (C*K,)
    follow_prone: np.ndarray  # (8,)


def _n(x: int, scale: float, floor: int = 2) -> int:
    return max(floor, int(round(x * scale)))


def _top_k(rng: np.random.Generator, logp: np.ndarray, k: int) -> np.ndarray:
    """k distinct draws per row without replacement (Gumbel top-k). logp: (N, C) -> (N, k)."""
    return np.argsort(-(logp + rng.gumbel(size=logp.shape)), axis=1)[:, :k]


def make_world(p: GenerateParams, rng: np.random.Generator) -> World:
    """Draw the latent users, items and their planted parameters."""
    n_users, n_items = _n(p.n_users, p.scale, 4), _n(p.n_items, p.scale, 20)
    n_authors, C, K = _n(p.n_authors, p.scale), p.n_categories, p.n_subcategories
    cat_pop = 1.0 / np.arange(1, C + 1) ** 0.7
    cat_pop /= cat_pop.sum()
    item_cat = rng.choice(C, size=n_items, p=cat_pop)
    type_p = np.array(
        [0.8 if t == "VIDEO" else 0.1 if t == "IMAGE_ATLAS" else 0.02 for t in ITEM_TYPES]
    )
    author_pop = 1.0 / np.arange(1, n_authors + 1) ** 0.8
    author = 1 + rng.choice(n_authors, size=n_items, p=author_pop / author_pop.sum())
    author[rng.random(n_items) < 0.03] = 0
    logp = np.broadcast_to(np.log(cat_pop), (n_users, C))
    feed_cats = _top_k(rng, logp, 3)
    others = _top_k(rng, np.where(_onehot(feed_cats, C), -np.inf, logp), 3)
    overlap = rng.random((n_users, 3)) < p.search_rec_overlap
    # drawn only when asked for, so that the default world's draws stay as they were
    search_cats = (
        _top_k(rng, logp, 3)
        if p.search_interests == "independent"
        else np.where(overlap, feed_cats, others)
    )
    feat1 = rng.integers(0, 3, n_users)
    follow_prone = rng.permutation(np.linspace(-1.0, 1.0, 8))
    return World(
        cat_pop=cat_pop,
        item_cat=item_cat,
        item_sub=item_cat * K + rng.integers(0, K, n_items),
        item_type=np.asarray(ITEM_TYPES)[
            rng.choice(len(ITEM_TYPES), n_items, p=type_p / type_p.sum())
        ],
        item_author=author,
        item_quality=rng.normal(size=n_items),
        item_duration=np.round(
            np.clip(np.exp(rng.normal(np.log(20_000), 0.9, n_items)), 2_000, 600_000), -2
        ),
        feed_cats=feed_cats,
        search_cats=search_cats,
        user_activity=rng.lognormal(0.0, p.activity_skew, n_users),
        user_search_activity=rng.lognormal(0.0, p.activity_skew, n_users),
        feat1=feat1,
        feat2=rng.integers(0, 8, n_users),
        user_bias=0.4 * (feat1 - 1) + rng.normal(0, 0.3, n_users),
        user_taste=rng.normal(size=n_users),
        author_like=rng.normal(size=n_authors + 1),
        author_follow=rng.normal(size=n_authors + 1),
        sub_forward=rng.normal(size=C * K),
        follow_prone=follow_prone,
    )


def _onehot(idx: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((idx.shape[0], n), dtype=bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out


def _counts(rng: np.random.Generator, total: int, weights: np.ndarray, floor: int) -> np.ndarray:
    """Split `total` events over users by weight, each user getting at least `floor`."""
    extra = max(0, total - floor * len(weights))
    return floor + rng.multinomial(extra, weights / weights.sum())


def _pick_in_category(
    rng: np.random.Generator, cats: np.ndarray, pool_cat: np.ndarray
) -> np.ndarray:
    """For each requested category, a uniformly drawn pool position whose category matches."""
    order = np.argsort(pool_cat, kind="stable")
    C = max(int(pool_cat.max()), int(cats.max())) + 1
    counts = np.bincount(pool_cat, minlength=C)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n = counts[cats]
    pos = starts[cats] + np.floor(rng.random(len(cats)) * np.maximum(n, 1)).astype(np.int64)
    anywhere = rng.integers(0, len(pool_cat), len(cats))
    return np.where(n > 0, order[np.minimum(pos, len(order) - 1)], anywhere)


def _word_lists(
    rng: np.random.Generator, cats: np.ndarray, lo: int, hi: int, p: GenerateParams
) -> pl.Series:
    """Word-id lists: words drawn mostly from each row's category pool (Zipf-like inside it)."""
    pool = p.n_words // (p.n_categories + 1)
    n = len(cats)
    rank = np.minimum(rng.zipf(1.6, (n, hi)) - 1, pool - 1)
    words = 1 + cats[:, None] * pool + rank
    common = 1 + p.n_categories * pool + rng.integers(0, pool, (n, hi))
    words = np.where(rng.random((n, hi)) < 0.75, words, common)
    lengths = rng.integers(lo, hi + 1, n)
    df = pl.DataFrame({"w": words, "n": lengths})
    return df.select(pl.col("w").arr.to_list().list.head(pl.col("n"))).to_series()


def _text_time(ms_col: str) -> pl.Expr:
    """Unix ms -> 'YYYY-MM-DD HH:MM:SS' in Beijing time (UTC+8, no DST)."""
    return (pl.from_epoch(pl.col(ms_col).cast(pl.Int64), "ms") + pl.duration(hours=8)).dt.strftime(
        "%Y-%m-%d %H:%M:%S"
    )


def _calibrate(logit: np.ndarray, target: float) -> float:
    """The bias b such that mean(sigmoid(logit + b)) == target (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(logit + mid)))).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _std(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def draw_logs(
    p: GenerateParams,
) -> tuple[np.random.Generator, World, np.ndarray, pl.DataFrame, pl.DataFrame]:
    """The world, item ids, search log and feed log in index form (u, i, qcat, ...), and the
    generator ready for the remaining draws; what `generate` writes and flows.experiments.oracle reads."""
    rng = np.random.default_rng(p.seed)
    w = make_world(p, rng)
    n_items = len(w.item_cat)
    item_ids = np.sort(rng.choice(20 * n_items, n_items, replace=False)) + 1
    t0, span = beijing_ms(f"{p.start} 00:00:00"), p.days * DAY_MS
    search = _search_log(p, w, rng, t0, span)
    return rng, w, item_ids, search, _rec_log(p, w, rng, t0, span, search)


def generate(p: GenerateParams) -> dict[str, pl.DataFrame]:
    """All five KuaiSAR files as frames, deterministic for `p.seed`."""
    rng, w, item_ids, search, rec = draw_logs(p)
    t0 = beijing_ms(f"{p.start} 00:00:00")
    user_ids = np.arange(1, len(w.feed_cats) + 1)
    rec = rec.with_columns(user_id=pl.col("u") + 1, item_id=pl.Series(item_ids).gather(rec["i"]))
    src = search.with_columns(
        user_id=pl.col("u") + 1, item_id=pl.Series(item_ids).gather(search["i"])
    )
    frames = {
        "rec_inter.csv": rec.with_columns(time=_text_time("timestamp")),
        "src_inter.csv": src.with_columns(
            search_session_time=_text_time("search_session_timestamp"), keyword=format_idlist("kw")
        ),
        "user_features.csv": _user_features(w, rng, user_ids),
        "item_features.csv": _item_features(p, w, rng, item_ids, t0),
        "social_network.csv": _social(rng, user_ids, w.user_activity),
    }
    # a request or a result page can draw the same item twice: keep one, as a real log would
    return {
        f: df.select(list(RAW_FILES[f])).unique(maintain_order=True) for f, df in frames.items()
    }


def similar_sessions(w: World, search: pl.DataFrame) -> pl.DataFrame:
    """The planted truth of SESRec's split, per search session (`search`: draw_logs' search log):
    `similar` is true when the session's query category is one of its user's feed interests
    (search_rec_overlap decides how often a search interest is one), else false."""
    sessions = search.group_by("search_session_id").agg(pl.first("u"), pl.first("qcat"))
    u, c = sessions["u"].to_numpy(), sessions["qcat"].to_numpy()
    return sessions.select(
        "search_session_id", similar=pl.Series((w.feed_cats[u] == c[:, None]).any(1))
    )


def _search_log(
    p: GenerateParams, w: World, rng: np.random.Generator, t0: int, span: int
) -> pl.DataFrame:
    n_users = len(w.feed_cats)
    per_user = _counts(
        rng, _n(p.search_sessions, p.scale, n_users), w.user_activity * w.user_search_activity, 1
    )
    su = np.repeat(np.arange(n_users), per_user)
    n_s = len(su)
    ts = t0 + rng.integers(0, span, n_s)
    order = np.argsort(ts, kind="stable")
    su, ts = su[order], ts[order]
    qcat = w.search_cats[su, rng.choice(3, n_s, p=SLOT_P)]
    if p.search_novelty > 0:  # a passing intent: a category drawn by popularity
        fresh = rng.choice(len(w.cat_pop), n_s, p=w.cat_pop)
        qcat = np.where(rng.random(n_s) < p.search_novelty, fresh, qcat)
    kw = _word_lists(rng, qcat, 1, 4, p)
    n_res = rng.integers(3, 11, n_s)
    s_idx = np.repeat(np.arange(n_s), n_res)
    pos = np.arange(len(s_idx)) - np.repeat(np.cumsum(n_res) - n_res, n_res)
    relevant = rng.random(len(s_idx)) < 0.7
    rand_item = rng.integers(0, len(w.item_cat), len(s_idx))
    item = np.where(relevant, _pick_in_category(rng, qcat[s_idx], w.item_cat), rand_item)
    relevant = w.item_cat[item] == qcat[s_idx]
    logit = (
        -3.0
        + 1.8 * relevant
        + 0.5 * w.item_quality[item]
        - 0.15 * pos
        + 0.3 * w.user_bias[su[s_idx]]
    )
    click = (rng.random(len(s_idx)) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return pl.DataFrame(
        {
            "u": su[s_idx],
            "search_session_id": (s_idx + 1).astype(np.int64),
            "search_session_timestamp": ts[s_idx].astype(np.int64),
            "kw": kw.gather(s_idx),
            "search_source": np.asarray(SEARCH_SOURCES)[rng.choice(4, n_s, p=[0.7, 0.1, 0.1, 0.1])][
                s_idx
            ],
            "i": item,
            "click_cnt": click,
            "item_type": w.item_type[item],
            "qcat": qcat[s_idx],
        }
    )


def serving_shares(w: World, u: np.ndarray) -> np.ndarray:
    """(n, C): the share of user u's feed impressions in each category (before search_serving):
    SERVE_FROM's mix of their feed interests, their search interests (by SLOT_P) and popularity."""
    out = np.broadcast_to(SERVE_FROM[2] * w.cat_pop, (len(u), len(w.cat_pop))).copy()
    rows = np.arange(len(u))
    for slot, share in enumerate(SLOT_P):
        out[rows, w.feed_cats[u, slot]] += SERVE_FROM[0] * share
        out[rows, w.search_cats[u, slot]] += SERVE_FROM[1] * share
    return out


def click_signal(w: World, u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """The click logit's planted signal without the search effect: 3 * interest(user, category)
    + 0.6 * quality + user bias; u and i of one shape."""
    interest = ((w.feed_cats[u] == w.item_cat[i][..., None]) * INTEREST).sum(-1)
    return 3.0 * interest + 0.6 * w.item_quality[i] + w.user_bias[u]


def _rec_log(
    p: GenerateParams, w: World, rng: np.random.Generator, t0: int, span: int, search: pl.DataFrame
) -> pl.DataFrame:
    n_users = len(w.feed_cats)
    per_user = _counts(rng, _n(p.rec_actions, p.scale, 5 * n_users), w.user_activity, 5)
    u = np.repeat(np.arange(n_users), per_user)
    n = len(u)
    # requests: consecutive impressions of a user share one served timestamp
    raw_t = t0 + rng.integers(0, span, n)
    order = np.lexsort((raw_t, u))
    u, raw_t = u[order], raw_t[order]
    first = np.r_[True, u[1:] != u[:-1]] | (rng.random(n) < 0.35)
    t = raw_t[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
    # which category the feed serves: feed interests, search interests or popularity
    src = rng.choice(3, n, p=SERVE_FROM)
    slot = rng.choice(3, n, p=SLOT_P)
    cat = np.where(
        src == 0,
        w.feed_cats[u, slot],
        np.where(src == 1, w.search_cats[u, slot], rng.choice(len(w.cat_pop), n, p=w.cat_pop)),
    )
    if p.search_serving > 0:  # the feed answers a recent search with its category
        last = last_searched(u, t, search, p.search_effect_hours)
        cat = np.where((rng.random(n) < p.search_serving) & (last >= 0), last, cat)
    feed_pool = np.flatnonzero(np.isin(w.item_type, FEED_ITEM_TYPES))
    i = feed_pool[_pick_in_category(rng, cat, w.item_cat[feed_pool])]
    recent = recently_searched(u, w.item_cat[i], t, search, p.search_effect_hours)
    signal = click_signal(w, u, i) + p.search_effect * recent
    logit = signal + rng.normal(0, CLICK_NOISE, n)
    bias = _calibrate(logit, 0.5)
    click = rng.random(n) < 1 / (1 + np.exp(-(logit + bias)))
    shared, rho = _std(signal), p.label_correlation
    own = {
        "like": w.author_like[w.item_author[i]] + 0.7 * w.user_taste[u],
        "follow": w.author_follow[w.item_author[i]] + w.follow_prone[w.feat2[u]],
        "forward": w.sub_forward[w.item_sub[i]] + 0.6 * (w.feat1[u] - 1),
        "long_view": -np.log(w.item_duration[i] / 20_000) + 0.5 * w.item_quality[i],
    }
    labels = {}
    for task, g in own.items():
        lg = 2.0 * (rho * shared + np.sqrt(1 - rho**2) * _std(g))
        lg = lg + _calibrate(lg[click], TARGET_RATE_AFTER_CLICK[task])
        labels[task] = click & (rng.random(n) < 1 / (1 + np.exp(-lg)))
    dur = w.item_duration[i].astype(np.float64)
    searched = rng.random(n) < 0.03
    return pl.DataFrame(
        {
            "u": u,
            "i": i,
            "playing_time": _playing_time(rng, dur, click, labels["long_view"]),
            "duration_ms": dur,
            "timestamp": t.astype(np.float64),
            "click": click.astype(np.int8),
            "forward": labels["forward"].astype(np.int8),
            "like": labels["like"].astype(np.int8),
            "follow": labels["follow"].astype(np.int8),
            "search": searched.astype(np.int8),
            "search_item_related": (searched & (rng.random(n) < 0.6)).astype(np.int8),
            "click_bias": np.full(n, bias),  # internal, like u and i: not written
        }
    )


def _playing_time(
    rng: np.random.Generator, dur: np.ndarray, click: np.ndarray, long_view: np.ndarray
) -> np.ndarray:
    """Play time that encodes long view under the release's valid-play rule (see tasks.split)."""
    short = dur <= 7_000
    r = rng.random(len(dur))
    valid = np.where(short, dur * (1.0 + r), 7_001 + r * np.maximum(dur * 1.2 - 7_001, 1))
    invalid = np.where(short, dur * 0.99 * r, np.minimum(dur, 7_000) * r)
    return np.round(np.where(click, np.where(long_view, valid, invalid), 0.0))


def _last_search(
    imp: pl.DataFrame, search: pl.DataFrame, by: list[str], hours: float
) -> pl.DataFrame:
    """For each impression (u, t, row and the `by` columns), the user's last search session
    strictly before t that matches on `by`: its category `cat` and `recent` (within `hours`)."""
    ses = (
        search.group_by("search_session_id")
        .agg(pl.first("u"), cat=pl.first("qcat"), ts=pl.first("search_session_timestamp"))
        .select("u", "cat", t=pl.col("ts"), last_search=pl.col("ts"))
        .sort("t")
    )
    joined = imp.sort("t").join_asof(
        ses,
        on="t",
        by=by,
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    age = (joined["t"] - joined["last_search"]).fill_null(np.iinfo(np.int64).max)
    return joined.with_columns(recent=age <= hours * 3_600_000).sort("row")


def recently_searched(
    u: np.ndarray, c: np.ndarray, t: np.ndarray, search: pl.DataFrame, hours: float
) -> np.ndarray:
    """1.0 where the user searched category c in the `hours` before t (strictly before)."""
    imp = pl.DataFrame({"u": u, "cat": c, "t": t, "row": np.arange(len(u))})
    return _last_search(imp, search, ["u", "cat"], hours)["recent"].to_numpy().astype(np.float64)


def last_searched(u: np.ndarray, t: np.ndarray, search: pl.DataFrame, hours: float) -> np.ndarray:
    """The category of the user's last search in the `hours` before t (strictly before), or -1."""
    imp = pl.DataFrame({"u": u, "t": t, "row": np.arange(len(u))})
    j = _last_search(imp, search, ["u"], hours)
    return np.where(j["recent"].to_numpy(), j["cat"].fill_null(-1).to_numpy(), -1)


def _user_features(w: World, rng: np.random.Generator, user_ids: np.ndarray) -> pl.DataFrame:
    def level(x: np.ndarray) -> np.ndarray:
        return 1 + np.searchsorted(np.quantile(x, [0.25, 0.5, 0.75]), x)

    return pl.DataFrame(
        {
            "user_id": user_ids,
            "search_active_level": level(w.user_activity * w.user_search_activity),
            "rec_active_level": level(w.user_activity),
            "onehot_feat1": w.feat1,
            "onehot_feat2": w.feat2,
        }
    )


def _item_features(
    p: GenerateParams, w: World, rng: np.random.Generator, item_ids: np.ndarray, t0: int
) -> pl.DataFrame:
    # only the items the feed can serve (VIDEO, IMAGE_ATLAS) have a row, as in the release
    keep = np.isin(w.item_type, FEED_ITEM_TYPES)
    item_ids = item_ids[keep]
    n = len(item_ids)
    upload = t0 - rng.integers(DAY_MS, 365 * DAY_MS, n)
    cat1, cat2 = w.item_cat[keep] + 1, w.item_sub[keep] + 1
    df = pl.DataFrame(
        {
            "item_id": item_ids,
            "kw": _word_lists(rng, w.item_cat[keep], 3, 10, p),
            "author_id": w.item_author[keep],
            "item_type": np.where(rng.random(n) < AD_SHARE, "AD", "NORMAL"),
            "upload_ms": upload,
            "upload_type": np.asarray(UPLOAD_TYPES)[rng.integers(0, len(UPLOAD_TYPES), n)],
            "first_level_category_id": cat1,
            "second_level_category_id": cat2,
            "third_level_category_id": np.zeros(n, dtype=np.int64),
            "fourth_level_category_id": np.zeros(n, dtype=np.int64),
        }
    )
    upload_text = pl.from_epoch(pl.col("upload_ms"), "ms").dt.strftime("%Y-%m-%d")
    names = [
        (
            pl.format("类目{}", pl.col(f"{lvl}_level_category_id")),
            pl.format("Category {}", pl.col(f"{lvl}_level_category_id")),
        )
        if lvl in ("first", "second")
        else (pl.lit("空"), pl.lit("empty"))
        for lvl in ("first", "second", "third", "fourth")
    ]
    return df.with_columns(
        caption=format_idlist("kw"),
        upload_time=pl.when(pl.Series(rng.random(n) < 0.02))
        .then(pl.lit("1970-01-01"))
        .otherwise(upload_text),
        **{
            f"{lvl}_level_category_{suffix}": expr
            for lvl, pair in zip(("first", "second", "third", "fourth"), names, strict=True)
            for suffix, expr in zip(("name", "name_en"), pair, strict=True)
        },
    )


def _social(rng: np.random.Generator, user_ids: np.ndarray, activity: np.ndarray) -> pl.DataFrame:
    """Follow edges towards popular users; not used by the models (see README)."""
    n = len(user_ids)
    k = rng.poisson(3, n)
    src = np.repeat(user_ids, k)
    pop = activity / activity.sum()
    dst = user_ids[rng.choice(n, len(src), p=pop)]
    keep = src != dst
    return pl.DataFrame({"user_id": src[keep], "user_follow_id": dst[keep]}).unique(
        maintain_order=True
    )
