"""Generator profiles: the date span, sizes and shape of each public KuaiSAR release.

`profile_params(name, scale)` gives the generator's params for a folder shaped like that release
(its dates exactly; users, items and actions times `scale`), so a folder "like KuaiSAR-small"
can be made and run end to end without the download. Planted structure (interests, effects) is
the generator's default; only the shape follows the release.

Sizes, from the release's description (KuaiSAR, CIKM 2023; ../shared/DESIGN.md):
- full: 2023-05-22 to 2023-06-09 (19 days), 25,877 users, ~6.9M items, 14.6M feed actions,
  5.1M search actions;
- small: 2023-05-22 to 2023-05-31 (10 days), 7.5M feed and 3.2M search actions. Its user and
  item counts are not in that description: users are taken as the full release's and items as
  the full count scaled by the feed actions (an estimate, marked below).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.config.params import GenerateParams

RESULTS_PER_SESSION = 6.5  # the generator shows 3..10 results per search session


@dataclass(frozen=True)
class Profile:
    start: str  # first day (Beijing)
    days: int
    users: int
    items: int
    feed_actions: int
    search_actions: int  # search result rows (src_inter.csv)
    estimated: tuple[str, ...] = ()  # sizes not stated by the release


PROFILES: dict[str, Profile] = {
    "kuaisar_full": Profile("2023-05-22", 19, 25_877, 6_890_000, 14_600_000, 5_100_000),
    "kuaisar_small": Profile(
        "2023-05-22",
        10,
        25_877,
        round(6_890_000 * 7.5 / 14.6),
        7_500_000,
        3_200_000,
        estimated=("users", "items"),
    ),
}


def profile_params(name: str, scale: float = 1.0, seed: int = 7) -> GenerateParams:
    """The generator's params for a folder shaped like release `name`, sizes times `scale`."""
    if name not in PROFILES:
        raise ValueError(f"unknown generator profile {name!r}; known: {sorted(PROFILES)}")
    p = PROFILES[name]
    return GenerateParams(
        seed=seed,
        scale=scale,
        start=p.start,
        days=p.days,
        n_users=p.users,
        n_items=p.items,
        n_authors=max(500, p.items // 4),
        n_words=50_000,
        rec_actions=p.feed_actions,
        search_sessions=round(p.search_actions / RESULTS_PER_SESSION),
    )
