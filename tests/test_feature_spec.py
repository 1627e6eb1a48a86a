"""The feature spec: fields declared once, and a new item field carried by ranking candidates and
sampled negatives with no change anywhere but its one line in tasks/kuaisar/spec.py."""

from __future__ import annotations

import json
import sys

import pytest

from tasks.kuaisar.spec import DENSE, FIELD, FIELDS, ITEM_SIDE, SPARSE
from tests.conftest import make_project, run

# a text column of item_features.csv that no field reads yet (the generator fills it per item)
NEW_FIELD = '    Field("cat2_name", "item", "sparse", "second_level_category_name_en", vocab="cat2_name"),\n'

CHECK = """
import json, sys
import numpy as np, polars as pl, torch
from tasks.evaluation import candidates, ranking
from tasks.training.negatives import with_sampled_negatives
from tasks.training.tensors import load_histories, load_samples, read_spec

d = sys.argv[1]
from pathlib import Path
d = Path(d)
spec = read_spec(d)
cpu = torch.device("cpu")
test = load_samples(d, "rec_test", spec, ["click"], cpu)
train = load_samples(d, "rec_train", spec, ["click"], cpu)
hist = load_histories(d, spec, cpu)
frames = {p: pl.read_parquet(d / f"rec_{p}.parquet") for p in ("train", "valid", "test")}
served = pl.concat([f.select("raw_user_id", "item_id") for f in frames.values()])
c = candidates.draw(frames["train"], frames["test"], served, 9, 40, 0, spec["item_side"])
seen = []

class Probe(torch.nn.Module):
    def forward(self, sparse, dense, seqs):
        seen.append(sparse)
        return torch.zeros(len(sparse), 1)

ranking.scores(Probe(), test, hist, c, spec, 0)
names = list(spec["sparse"])
cand = torch.cat(seen).numpy()
neg = with_sampled_negatives(train, spec, 0, 2, seed=0).sparse[len(train):].numpy()
items = pl.concat([frames["train"], frames["test"]]).unique("item_id", keep="first")
own = dict(zip(items["item_id"].to_list(), items["cat2_name"].to_list(), strict=True))
i, k = names.index("item_id"), names.index("cat2_name")
bad = [r for rows in (cand, neg) for r in rows if own[int(r[i])] != int(r[k])]
print(json.dumps({"rows": len(cand) + len(neg), "bad": len(bad), "distinct": len(set(cand[:, k]))}))
"""


def test_the_spec_derives_each_list_once():
    assert set(SPARSE) | set(DENSE) <= set(FIELD) and len(FIELD) == len(FIELDS)
    assert tuple(f.name for f in FIELDS if f.side == "item") == ITEM_SIDE
    assert "log_duration" in ITEM_SIDE  # the dense item field candidates must carry too
    for f in FIELDS:
        if f.kind == "sequence" and f.target is not None:
            assert f.target in SPARSE, f


@pytest.mark.slow
def test_one_spec_line_adds_an_item_field_that_candidates_and_negatives_carry(tmp_path):
    d = make_project(tmp_path / "sarflow")
    spec_py = d / "tasks" / "kuaisar" / "spec.py"
    text = spec_py.read_text()
    anchor = '    Field("upload_type",'
    assert anchor in text
    spec_py.write_text(text.replace(anchor, NEW_FIELD + anchor, 1))
    for stage in ("generate", "split", "features"):
        run([sys.executable, "-m", f"tasks.{stage}"], cwd=d)
    spec = json.loads((d / "data" / "features" / "spec.json").read_text())
    assert "cat2_name" in spec["sparse"] and "cat2_name" in spec["item_side"]
    (d / "check.py").write_text(CHECK)
    out = run([sys.executable, "check.py", "data/features"], cwd=d).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["rows"] > 100 and got["bad"] == 0 and got["distinct"] > 1, got
