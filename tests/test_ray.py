"""The Ray engine: `mmi embed --engine ray` builds the single-process store, and
`mmi recommend-batch` (locally and on Ray) gives each user what `mmi recommend` gives.

One local Ray (2 CPUs) is shared by the module: starting it takes seconds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray  # the [distributed] extra, which the README's test command installs

from multimodal_interest.bundle import Bundle
from multimodal_interest.catalog import Catalog
from multimodal_interest.cli import main
from multimodal_interest import batch as rb
from multimodal_interest.data.errors import DatasetError
from multimodal_interest.embed import embed_catalog, load_encoders
from multimodal_interest.recommend import Recommender
from multimodal_interest.store import EmbeddingStore

from serving_world import train_model, write_world


N_ITEMS = 120  # Art titles: a small real catalog
TEXT = {"text": "sentence-transformer"}


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def art_catalog(shared_data, tmp_path_factory) -> Path:
    raw = pd.read_csv(shared_data / "amazon_art_office" / "item_listA_F.csv", nrows=N_ITEMS)
    path = tmp_path_factory.mktemp("art") / "art.csv"
    pd.DataFrame({"item_id": "a" + raw["idBefore"].astype(str), "title": raw["item_title"],
                  "attributes": raw["item_attribute"]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def local_store(art_catalog, tmp_path_factory) -> EmbeddingStore:
    store = EmbeddingStore(tmp_path_factory.mktemp("local") / "store")
    embed_catalog(Catalog.read(art_catalog), store, "art", load_encoders(TEXT), show_progress=False)
    return store


def cmdline(process) -> str:
    """A process's command line ("" once it has exited: a zombie, gone)."""
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def shard_rows(store: EmbeddingStore) -> list[str]:
    """Every row's item id over every shard (duplicates kept)."""
    vs = store.get("art", "text")
    return [i for path in vs.shards() for i in pq.read_table(path, columns=["item_id"])["item_id"].to_pylist()]


def test_ray_store_equals_single_process_store_and_reruns_encode_nothing(ray_session, art_catalog,
                                                                         local_store, tmp_path, capsys):
    store = tmp_path / "store"
    args = ["embed", str(art_catalog), "--store", str(store), "--engine", "ray", "--shard-size", "50"]
    assert main(args) == 0
    got, want = EmbeddingStore(store), local_store
    assert got.fingerprints("art", "text") == want.fingerprints("art", "text")
    a, b = want.load("art", "text"), got.load("art", "text")
    assert sorted(a.ids) == sorted(b.ids) and len(a.ids) == N_ITEMS
    b = got.load("art", "text", ids=a.ids)
    assert float((a.vectors - b.vectors).abs().max()) < 1e-5
    assert got.get("art", "text").content_hashes() == want.get("art", "text").content_hashes()
    assert sorted(shard_rows(got)) == sorted(a.ids)  # each row once, in shards of 50
    assert len(got.get("art", "text").shards()) == 3
    capsys.readouterr()
    assert main(args) == 0  # nothing changed: nothing encoded
    out = capsys.readouterr().out
    assert f"{N_ITEMS:>8}{0:>9}{N_ITEMS:>8}" in out, out
    assert len(got.get("art", "text").shards()) == 3


def test_ray_embed_resumes_after_the_driver_dies(ray_session, art_catalog, local_store, tmp_path, monkeypatch):
    """The driver dies after writing two shards; the rerun encodes exactly the rest."""
    from multimodal_interest.store import VectorSet

    store = EmbeddingStore(tmp_path / "store")
    real = VectorSet.write_shard
    written = []

    def dying(self, ids, *a, **kw):
        if len(written) == 2:
            raise KeyboardInterrupt  # as a killed driver: nothing more reaches the store
        written.append(list(ids))
        return real(self, ids, *a, **kw)

    monkeypatch.setattr(VectorSet, "write_shard", dying)
    from multimodal_interest.distributed import embed_catalog_ray

    with pytest.raises(KeyboardInterrupt):
        embed_catalog_ray(Catalog.read(art_catalog), store, "art", TEXT, shard_size=30, show_progress=False)
    monkeypatch.setattr(VectorSet, "write_shard", real)
    assert len(shard_rows(store)) == 60
    summary = embed_catalog_ray(Catalog.read(art_catalog), store, "art", TEXT, shard_size=30,
                                show_progress=False)
    assert (summary.modalities[0].encoded, summary.modalities[0].reused) == (N_ITEMS - 60, 60)
    rows = shard_rows(store)
    assert len(rows) == len(set(rows)) == N_ITEMS
    a = local_store.load("art", "text")
    assert float((a.vectors - store.load("art", "text", ids=a.ids).vectors).abs().max()) < 1e-5


def test_default_path_does_not_import_ray():
    code = ("import sys, multimodal_interest.cli, multimodal_interest.commands.embed, "
            "multimodal_interest.commands.recommend_batch; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- recommend-batch
@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    dataset, store = write_world(root, n_users=200)
    run = train_model(dataset, store, root / "run", epochs=1)
    Bundle.build(run, dataset, store).save(root / "bundle", ())
    inter = pd.read_csv(root / "data" / "interactions.csv")
    histories = inter[inter["platform"] == "a"].sample(frac=1.0, random_state=0)  # timestamps give the order
    histories = histories.sort_values("user_id", kind="stable")[["user_id", "item_id", "timestamp"]]
    histories.loc[histories.index[3], "item_id"] = "no-such-item"  # this user gets an error row
    histories.to_csv(root / "histories.csv", index=False)
    return root


def batch_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["recommend-batch", "--model", str(root / "bundle"), "--histories", str(root / "histories.csv"),
            "--platform", "b", "--source", "a", "--output", str(out), "-k", "5", "--explain", "2",
            "--users-per-part", "40", *extra]


def read_output(out: Path) -> pd.DataFrame:
    manifest = json.loads((out / rb.MANIFEST).read_text())
    return pd.concat([pq.read_table(out / p["file"]).to_pandas() for p in manifest["parts"]], ignore_index=True)


def test_recommend_batch_equals_recommend(deployment, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(batch_args(deployment, out)) == 0
    got = read_output(out).set_index("user_id")
    hist = pd.read_csv(deployment / "histories.csv")
    assert sorted(got.index) == sorted(hist["user_id"].unique())  # every user once
    bad = hist["user_id"].iloc[3]
    assert "no-such-item" in got.loc[bad, "error"] and got.loc[bad, "item_ids"] is None
    capsys.readouterr()
    for user in list(hist["user_id"].unique()[:6]):
        if user == bad:
            continue
        rows = hist[hist["user_id"] == user].sort_values("timestamp", kind="stable")
        (tmp_path / "h.txt").write_text("\n".join(rows["item_id"]) + "\n")
        assert main(["recommend", "--model", str(deployment / "bundle"), "--platform", "b", "--history",
                     str(tmp_path / "h.txt"), "--source", "a", "-k", "5", "--explain", "2", "--json",
                     "--save-interest", str(tmp_path / "u.json")]) == 0
        want = json.loads(capsys.readouterr().out)
        row = got.loc[user]
        assert list(row["item_ids"]) == [x["item_id"] for x in want["items"]]
        assert np.array_equal(np.asarray(row["scores"], np.float32),
                              np.asarray([x["score"] for x in want["items"]], np.float32))
        assert [[c["item_id"] for c in b] for b in row["because"]] == \
               [[c["item_id"] for c in x["because"]] for x in want["items"]]
        assert np.array_equal(np.asarray(row["interest"], np.float32),
                              np.asarray(json.loads((tmp_path / "u.json").read_text())["vector"], np.float32))
        assert row["history_used"] == want["history"]["used"]


def test_recommend_batch_on_ray_resumes_without_duplicates(ray_session, deployment, tmp_path, capsys):
    local, out = tmp_path / "local", tmp_path / "ray"
    assert main(batch_args(deployment, local, "--explain", "0")) == 0
    want = read_output(local)
    assert main(batch_args(deployment, out, "--explain", "0", "--engine", "ray")) == 0
    pd.testing.assert_frame_equal(read_output(out), want)
    # a killed run: one part gone, one cut short (as a kill mid-write cannot leave, but a disk can)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 5
    parts[1].unlink()
    parts[3].write_bytes(parts[3].read_bytes()[:100])
    capsys.readouterr()
    assert main(batch_args(deployment, out, "--explain", "0", "--engine", "ray")) == 0
    assert "2 written, 3 already done" in capsys.readouterr().out
    again = read_output(out)
    pd.testing.assert_frame_equal(again, want)
    assert again["user_id"].is_unique


def test_recommend_batch_refuses_scattered_users(deployment, tmp_path):
    hist = pd.read_csv(deployment / "histories.csv")
    path = tmp_path / "h.csv"
    pd.concat([hist, hist.iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=rf"h.csv:{len(hist) + 2}: column 'user_id': user .* again"):
        list(rb.read_chunks(path, 10, "a"))


@pytest.mark.slow
def test_killed_ray_worker_is_retried_every_row_once(ray_session, shared_data, tmp_path):
    """A worker process killed mid-job (SIGKILL, once the first shard is in): Ray restarts it
    and redoes its block; every item ends in the store exactly once."""
    import psutil

    from multimodal_interest.distributed import embed_catalog_ray

    raw = pd.read_csv(shared_data / "amazon_art_office" / "item_listA_F.csv", nrows=1000)
    catalog = tmp_path / "art.csv"
    pd.DataFrame({"item_id": raw["idBefore"].astype(str), "title": raw["item_title"]}).to_csv(catalog, index=False)
    store = EmbeddingStore(tmp_path / "store")
    killed = []

    def kill_one():  # an encoder actor of this test's own local Ray (a descendant of this process)
        while not killed:
            time.sleep(0.2)
            workers = [p for p in psutil.Process().children(recursive=True)
                       if "EncodeActor" in cmdline(p)]
            if workers and store.root.exists() and any(store.root.rglob("shard-*")):
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(len(list(store.root.rglob("shard-*"))))  # shards in when it died

    threading.Thread(target=kill_one, daemon=True).start()
    summary = embed_catalog_ray(Catalog.read(catalog), store, "art", TEXT, shard_size=50,
                                batch_size=8, show_progress=False)
    assert killed and killed[0] < 1000 // 50  # it died mid-job
    rows = shard_rows(store)
    assert len(rows) == len(set(rows)) == 1000 == summary.modalities[0].encoded
