"""The SESRec authors' own code (github.com/Ethan00Si/SESREC-SIGIR-2023) as a peer, on sarflow's data.

Converts a project's split data and ranking candidates into the official code's own layout:
"commercial" (the paper's Kuaishou layout; the release's nearest fields fill the authors' private
user and item slots) or "amazon" (ids only). Writes its constants from the data, then trains it
and scores sarflow's own candidates with its tester: each ranked test click and its 99 negatives
are the tester's group of 100 (it hard-codes 99; `candidates.negatives` is 99 by default).
Prints NDCG@10, HR@10 and MRR from its tester and its training rows/s; with `--pair-with` a sarflow
model's ranks.parquet, per-click paired CIs (the copy's tester is patched to write its group
scores); then one JSON line.

    git clone <a local copy of the official repository> /tmp/sesrec-official   # nothing is downloaded
    python -m venv /tmp/sesvenv && /tmp/sesvenv/bin/pip install torch==2.13.0 numpy pandas \\
        scikit-learn tqdm pyyaml tensorboard
    dvc repro candidates                                                        # in the project
    python bench/sesrec_official.py --official /tmp/sesrec-official --python /tmp/sesvenv/bin/python \\
        --pair-with artifacts/sesrec/ranks.parquet                             # after dvc repro evaluate@sesrec

The official code runs in its own interpreter (`--python`), in a copy of `--official` under
`--work`: its `config/const.py` is rewritten there with this data's sizes, and its tester writes
its group scores. Its training takes positives only (clicks), each against `--num-negs` items it
samples itself; a row there is not a sarflow sample, so rows/s is reported as what it is.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def dense(values: pl.Series, first: int) -> dict:
    """value -> first, first + 1, ... in sorted order."""
    return {v: i + first for i, v in enumerate(values.unique().sort().to_list())}


def fill_slots(
    vocab: dict[int, dict], index_of: dict[int, int], table: pl.DataFrame, slots: dict[str, str]
) -> dict[str, int]:
    """Each `slot: column` of `table` (keyed by its first column, the raw id) into `vocab` as codes
    from 1 (0: an id without a row); returns each slot's code count with the padding."""
    key = table.columns[0]
    counts = {}
    for slot, col in slots.items():
        codes = dense(table[col], 1)
        for raw_id, v in table.select(key, col).iter_rows():
            vocab[index_of[raw_id]][slot] = codes[v]
        for d in vocab.values():
            d.setdefault(slot, 0)
        counts[slot] = len(codes) + 1
    return counts


def convert(project: Path, out: Path, layout: str, rec_len: int, src_len: int) -> dict[str, int]:
    """Write the official `layout` under `out` (data/<layout>/...); returns its sizes."""
    split, cands = project / "data" / "split", project / "data" / "candidates"
    rec_hist = pl.read_parquet(split / "rec_history.parquet")
    src_hist = pl.read_parquet(split / "src_history.parquet")
    rec_train = pl.read_parquet(split / "rec_train.parquet").filter(pl.col("click") == 1)
    parts = {p: pl.read_parquet(split / f"rec_{p}.parquet") for p in ("valid", "test")}
    groups = {p: pl.read_parquet(cands / f"{p}.parquet") for p in ("valid", "test")}

    items = pl.concat(
        [rec_hist["item_id"], rec_train["item_id"], src_hist["item_id"]]
        + [g["raw_item_id"].explode() for g in groups.values()]
    ).unique().sort()  # fmt: skip
    item_of = {int(v): i + 1 for i, v in enumerate(items)}  # 0 is the official code's padding
    users = pl.concat([rec_hist["user_id"], rec_train["user_id"], src_hist["user_id"]]).unique()
    user_of = {int(v): i for i, v in enumerate(users.sort())}
    queries = {tuple(k): i + 1 for i, k in enumerate(src_hist["keyword"].unique().sort())}
    words = int(src_hist["keyword"].explode().max()) + 2  # word id + 1 (0: padding)

    user_vocab = {u: {"id": u, "rec_his": [], "src_his": []} for u in user_of.values()}
    item_vocab = {i: {"id": i} for i in item_of.values()}
    extra: dict[str, int] = {}
    source_of: dict[int, int] = {}
    if layout == "commercial":  # the release's nearest fields in the authors' private slots
        raw = project / "data" / "raw"
        user_slots = {
            "gender": "onehot_feat1",
            "age": "onehot_feat2",
            "src_level": "search_active_level",
        }
        item_slots = {"type1": "first_level_category_id", "cate": "second_level_category_id"}
        for prefix, vocab, index_of, file, slots in (
            ("user", user_vocab, user_of, "user_features.csv", user_slots),
            ("item", item_vocab, item_of, "item_features.csv", item_slots),
        ):
            key = f"{prefix}_id"
            table = pl.read_csv(raw / file, columns=[key, *slots.values()])
            table = table.filter(pl.col(key).is_in(list(index_of)))
            counts = fill_slots(vocab, index_of, table, slots)
            extra |= {f"{prefix}_{slot}_num": n for slot, n in counts.items()}
        src = pl.read_csv(raw / "src_inter.csv", columns=["search_session_id", "search_source"])
        src = src.unique("search_session_id", keep="first", maintain_order=True)
        codes = dense(src["search_source"], 0)
        source_of = {s_: codes[v] for s_, v in src.iter_rows()}
        extra["query_search_source_num"] = len(codes)
    for u, it in rec_hist.select("user_id", "item_id").iter_rows():  # chronological per user
        user_vocab[user_of[u]]["rec_his"].append(item_of[it])
    sessions = {}
    for u, s, kw, it in src_hist.select(
        "user_id", "search_session_id", "keyword", "item_id"
    ).iter_rows():
        key = str(s)
        user_vocab[user_of[u]]["src_his"].append(key)
        sessions[key] = {
            "query_id": queries[tuple(kw)],
            "search_source": source_of.get(s, 0),
            "click_items": [item_of[it]],
            "relevant_item": [item_of[it]],
            "keyword_seg": [w + 1 for w in kw],
        }  # fmt: skip

    data = out / "data" / layout
    (data / "dataset").mkdir(parents=True, exist_ok=True)
    (data / "vocab").mkdir(parents=True, exist_ok=True)
    cols = ["u_id", "i_id", "rec_his", "src_his", "label"]
    train = rec_train.select(
        pl.col("user_id").replace_strict(user_of).alias("u_id"),
        pl.col("item_id").replace_strict(item_of).alias("i_id"),
        pl.col("rec_hist_len").alias("rec_his"),
        pl.col("src_hist_len").alias("src_his"),
        pl.lit(1).alias("label"),
    )
    train.write_csv(data / "dataset" / "train_inter.tsv", separator="\t")
    for part, g in groups.items():  # one group of 100 rows per ranked click, the positive first
        rows = (
            parts[part]
            .with_row_index("row")
            .select(pl.col("row").cast(pl.Int64), "rec_hist_len", "src_hist_len")
        )
        g = g.join(rows, on="row", how="left", maintain_order="left").with_columns(
            label=pl.int_ranges(pl.col("raw_item_id").list.len()).list.eval(
                (pl.element() == 0).cast(pl.Int64)
            )
        )
        flat = g.explode("raw_item_id", "label").select(
            pl.col("raw_user_id").replace_strict(user_of).alias("u_id"),
            pl.col("raw_item_id").replace_strict(item_of).alias("i_id"),
            pl.col("rec_hist_len").alias("rec_his"),
            pl.col("src_hist_len").alias("src_his"),
            "label",
        )
        flat.select(cols).write_csv(data / "dataset" / f"{part}_inter.tsv", separator="\t")
    for name, obj in (
        ("user_vocab", user_vocab),
        ("item_vocab", item_vocab),
        ("s_session_vocab", sessions),
    ):
        with open(data / "vocab" / f"{name}.pickle", "wb") as f:
            pickle.dump(obj, f)
    return {
        "item_id_num": len(item_of) + 1,
        "user_id_num": len(user_of),
        "query_id_num": len(queries) + 1,
        "query_word_segs_num": words,
        "max_rec_his_len": rec_len,
        "max_src_his_len": src_len,
        "max_words_of_query": int(src_hist["keyword"].list.len().max()),
        "max_src_click_item": 1,
        **extra,
        "train_rows": train.height,
        "test_groups": groups["test"].height,
    }


def set_constants(const: Path, layout: str, sizes: dict[str, int]) -> None:
    """Rewrite the `layout` block of the copy's config/const.py with this data's sizes."""
    text = const.read_text()
    blocks = re.split(r"(?=\ndef init_dataset_setting_)", text)
    mark = f"\ndef init_dataset_setting_{layout}("
    i = next((k for k, b in enumerate(blocks) if b.startswith(mark)), None)
    if i is None:
        sys.exit(f"{const}: no init_dataset_setting_{layout}(); the official code has changed")
    for name, value in sizes.items():
        blocks[i], n = re.subn(rf"(\n\s*{name} = )[^\n#]*", rf"\g<1>{value} ", blocks[i])
        if name in ("item_id_num", "user_id_num", "max_rec_his_len") and n != 1:
            sys.exit(f"{const}: found {n} assignments of {name}; the official code has changed")
    const.write_text("".join(blocks))


DUMP_HOOK = """
        if os.environ.get("SARFLOW_DUMP"):  # added by sarflow's bench: per-group scores, for pairs
            np.save(os.environ["SARFLOW_DUMP"], np.asarray(group_preds))
"""


def dump_group_scores(tester: Path) -> None:
    """Make the copy's tester write each evaluation's group scores (the last one: test)."""
    text = tester.read_text()
    anchor = "        res_pairwise = self.judger.cal_metric("
    if anchor not in text:
        sys.exit(f"{tester}: no {anchor.strip()!r}; the official code has changed")
    text = "import os\n" + text.replace(anchor, DUMP_HOOK.lstrip("\n") + anchor, 1)
    tester.write_text(text)


def paired_with(scores: np.ndarray, project: Path, ranks: Path) -> dict[str, dict]:
    """The official ranks of the positives (ties to the positive, as sarflow ranks) against a
    sarflow model's ranks.parquet on the same candidates: per-click paired CIs (sarflow - it)."""
    from tasks.evaluation.candidates import click_values, ranks_of
    from tasks.evaluation.paired import paired_mean

    rank = ranks_of(scores)  # the positive is each group's first row, as in sarflow's candidates
    rows = pl.read_parquet(project / "data" / "candidates" / "test.parquet")["row"]
    theirs = pl.DataFrame({"row": rows, "rank_official": rank})
    both = pl.read_parquet(ranks).select("row", "rank").join(theirs, on="row")
    if both.height != len(rows):
        sys.exit(f"{ranks} ranks other clicks than {project}/data/candidates/test.parquet")
    return {
        m: paired_mean(
            click_values(both["rank"].to_numpy(), m),
            click_values(both["rank_official"].to_numpy(), m),
        )
        for m in ("ndcg@10", "hr@10", "mrr")
    }


def read_log(log: str) -> tuple[float, dict[str, float]]:
    """From the official run's log: the training epochs' seconds (each from the log line before
    its "epoch k:" line to that line: validation passes left out) and the test metrics."""
    import datetime as dt

    lines = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) - (.*)$", log, re.M)
    at = [dt.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t, _ in lines]
    train_s = sum(
        (at[i] - at[i - 1]).total_seconds()
        for i, (_, text) in enumerate(lines)
        if i and re.match(r"epoch \d+:", text)
    )
    test = log.split("TEST results", 1)[1]
    found = re.findall(r"'([a-z@0-9]+)': (?:np\.float64\()?([0-9.]+)", test)
    return train_s, {k: float(v) for k, v in found}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--official", type=Path, required=True, help="a local clone of the official code"
    )
    ap.add_argument("--python", default=sys.executable, help="the interpreter that runs it")
    ap.add_argument("--project", type=Path, default=ROOT, help="after `dvc repro candidates`")
    ap.add_argument("--work", type=Path, default=Path("/tmp/sesrec-official-run"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--num-negs", type=int, default=4)
    ap.add_argument(
        "--layout",
        choices=["amazon", "commercial"],
        default="commercial",
        help="commercial: also user levels/one-hot fields, item categories, search source",
    )
    ap.add_argument(
        "--pair-with",
        type=Path,
        help="a sarflow model's ranks.parquet on these candidates (artifacts/MODEL/ranks.parquet)",
    )
    a = ap.parse_args()
    from tasks.config.params import load_params

    fp = load_params(a.project / "params.yaml").features
    shutil.rmtree(a.work, ignore_errors=True)
    shutil.copytree(a.official, a.work, ignore=shutil.ignore_patterns(".git", "data", "workspace"))
    (a.work / "workspace").mkdir()
    sizes = convert(a.project, a.work, a.layout, fp.history_len, fp.search_history_len)
    set_constants(a.work / "config" / "const.py", a.layout, sizes)
    dump_group_scores(a.work / "tester.py")
    dump = a.work / "group_scores.npy"
    cmd = [
        a.python, "main.py", "--name", "SESRec", "--workspace", "./workspace/SESRec", "--use_cpu",
        "--epochs", str(a.epochs), "--model", "SESRec", "--batch_size", str(a.batch),
        "--num_negs", str(a.num_negs), "--dataset_name", a.layout,
    ]  # fmt: skip
    t0 = time.perf_counter()
    env = dict(os.environ, SARFLOW_DUMP=str(dump))
    proc = subprocess.run(cmd, cwd=a.work, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    logs = sorted((a.work / "workspace" / "SESRec").glob("*/log/default.log"))
    log = logs[-1].read_text() if logs else ""
    if proc.returncode != 0 or "TEST results" not in log:
        sys.exit(f"the official code failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    train_s, metrics = read_log(log)
    rows_s = sizes["train_rows"] * a.epochs / train_s
    print(f"converted ({a.layout} layout): {sizes}")
    print(
        f"official SESRec, {a.epochs} epoch(s): NDCG@10 {metrics.get('ndcg@10', float('nan')):.4f}, "
        f"HR@10 {metrics.get('hit@10', float('nan')):.4f}, MRR {metrics.get('mrr', float('nan')):.4f} "
        f"on {sizes['test_groups']} test groups; {rows_s:,.0f} training rows/s "
        f"(each a click and {a.num_negs} sampled negatives), "
        f"{wall:.0f} s in all"
    )
    pairs = {}
    if a.pair_with:
        from tasks.evaluation.paired import ci_text

        pairs = paired_with(np.load(dump), a.project, a.pair_with)
        for m, c in pairs.items():
            print(f"  {a.pair_with} - official, {m}: {ci_text(c)} over {c['n']} clicks")
    print(json.dumps({"bench": "sesrec_official", "layout": a.layout, "pairs": pairs, "sizes": sizes, "metrics": metrics,
                      "train_s": train_s, "rows_per_s": rows_s, "wall_s": wall}))  # fmt: skip


if __name__ == "__main__":
    main()
