"""Small files in the exact original formats of the papers' datasets, with a planted signal.

Nothing here is real data: rows are drawn so that the labels depend on a few columns (the
models must find that), written the way the public files are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from tasks.table.source import CENSUS_COLUMNS, CENSUS_NUMERIC, COLLEGE

EDUCATION = [
    *COLLEGE,
    "High school graduate",
    "Some college but no degree",
    "Children",
    "10th grade",
]
MARITAL = ["Never married", "Married-civilian spouse present", "Divorced", "Widowed"]


def census_truth(age: np.ndarray, college: np.ndarray) -> dict[str, np.ndarray]:
    """The planted probabilities of census_rows' two labels: the best any model can score."""
    return {
        "income_50k": 1 / (1 + np.exp(-(-3.5 + 3.0 * college + 0.05 * (age - 40)))),
        "never_married": 1 / (1 + np.exp((age - 28) / 5)),  # the young have never married
    }


def census_rows(n: int, seed: int) -> list[str]:
    """Lines of census-income.data: 42 fields joined by ', ', '?' for missing, label with '.'."""
    rng = np.random.default_rng(seed)
    age = rng.integers(0, 90, n)
    edu = rng.integers(0, len(EDUCATION), n)
    college = edu < len(COLLEGE)
    truth = census_truth(age, college)
    never = rng.random(n) < truth["never_married"]
    marital = np.where(never, 0, rng.integers(1, len(MARITAL), n))
    rich = rng.random(n) < truth["income_50k"]
    weeks = rng.integers(0, 53, n)
    lines = []
    for i in range(n):
        row = {}
        for c in CENSUS_COLUMNS:
            if c in CENSUS_NUMERIC:
                row[c] = str(int(rng.integers(0, 100)))
            else:
                row[c] = ["Not in universe", "Private", "Self-employed", "?"][
                    int(rng.integers(0, 4))
                ]
        row["age"] = str(age[i])
        row["weeks_worked_in_year"] = str(weeks[i])
        row["education"] = EDUCATION[edu[i]]
        row["marital_stat"] = MARITAL[marital[i]]
        row["instance_weight"] = f"{rng.uniform(100, 3000):.2f}"
        row["year"] = str(int(rng.choice([94, 95])))
        row["income"] = "50000+." if rich[i] else "- 50000."
        lines.append(", ".join(row[c] for c in CENSUS_COLUMNS))
    return lines


def write_census(folder: Path, n_train: int = 3000, n_test: int = 2000, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "census-income.data").write_text("\n".join(census_rows(n_train, seed)) + "\n")
    (folder / "census-income.test").write_text("\n".join(census_rows(n_test, seed + 1)) + "\n")
    return folder


def write_ali_ccp(folder: Path, n: int = 1500, seed: int = 0) -> Path:
    """ali_ccp_{train,val,test}.csv as commonly distributed: id fields, D* dense, click, purchase."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k, name in enumerate(("ali_ccp_train.csv", "ali_ccp_val.csv", "ali_ccp_test.csv")):
        m = n if k == 0 else n // 3
        f101 = rng.integers(0, 50, m)
        click = (rng.random(m) < np.where(f101 < 10, 0.6, 0.1)).astype(int)
        purchase = click * (rng.random(m) < 0.3).astype(int)
        pl.DataFrame(
            {
                "click": click,
                "purchase": purchase,
                "101": f101,
                "121": rng.integers(0, 20, m),
                "122": rng.integers(0, 5, m),
                "D109_14": rng.normal(size=m).round(4),
                "D110_14": rng.normal(size=m).round(4),
            }
        ).write_csv(folder / name)
    return folder


def write_aliexpress(folder: Path, n: int = 1500, seed: int = 0) -> Path:
    """train.csv / test.csv as commonly distributed: search_id, categorical_*, numerical_*, labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, m in (("train.csv", n), ("test.csv", n // 2)):
        c1 = rng.integers(0, 30, m)
        click = (rng.random(m) < np.where(c1 < 5, 0.5, 0.05)).astype(int)
        cols = {"search_id": np.arange(m)}
        cols |= {f"categorical_{j}": rng.integers(0, 10, m) for j in range(1, 4)}
        cols["categorical_1"] = c1
        cols |= {f"numerical_{j}": rng.normal(size=m).round(5) for j in range(1, 4)}
        cols |= {"click": click, "conversion": click * (rng.random(m) < 0.2).astype(int)}
        pl.DataFrame(cols).write_csv(folder / name)
    return folder
