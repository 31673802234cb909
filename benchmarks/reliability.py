"""Reliability probe: bad input and faults across catalog, store, training, bundle and HTTP,
met the way a user meets them, and the HTTP service under load on loopback.

    PYTHONPATH=. python benchmarks/reliability.py [--workdir DIR] [--requests 2000] [--concurrency 32]

First a small real deployment is built with the ``mmi`` commands themselves: the demo dataset
(MovieLens-100k cut by genre into comedy and drama, SYNTHETIC platforms; fetched from the
package index once), both platforms embedded with MiniLM, a small model trained for two epochs,
a bundle exported. Then each case breaks a copy of one part (a catalog, a store shard, a
checkpoint, a bundle file, a request), runs the real command in a subprocess (or sends the
request to ``mmi serve`` on 127.0.0.1), and records what came back: the exit code (or HTTP
status) and the first line of the error. A row is **handled** when the command did what the
case expects (a refusal that names the problem, or the job finishing correctly) with no
Python traceback. Last, ``--requests`` recommendations are sent at ``--concurrency`` with and
without explanations: errors, requests/s, p50/p99 latency and the server's RSS before and after.

Prints Markdown (one table per area and the load table) and exits 1 if any case is not handled.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, machine, markdown_table  # noqa: E402

SHARED = Path(os.environ.get("MMI_SHARED_DATA", REPO.parent / "shared" / "data"))
DATASET, SOURCE, TARGET, SPLIT = "movielens-100k", "comedy", "drama", "cold20_seed900"
SMALL = ["--set", "dim=32", "--set", "n_heads=2", "--set", "epochs=2", "--set", "min_epoch_steps=5",
         "--set", "batch_size=64", "--set", "eval_batch_size=256"]


@dataclass
class Ran:
    """What one command gave back."""

    rc: int
    out: str
    err: str

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.err

    def said(self) -> str:
        """The error line a user reads (``mmi X: error: ...``), else the last line of the
        output that is not a progress bar (a row's reason in ``mmi embed``'s summary)."""
        for line in self.err.splitlines():
            if ": error: " in line:
                return line.split(": error: ", 1)[1]
        lines = [x.strip() for x in (self.err + "\n" + self.out).splitlines()
                 if x.strip() and "it/s]" not in x and not x.strip().startswith("all reasons")]
        return lines[-1] if lines else ""


@dataclass
class Row:
    area: str
    case: str
    expect: str  # what a user should get
    got: str  # what came back
    handled: bool


class World:
    """The deployment every case breaks a copy of."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "MMI_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.store, self.run, self.bundle = root / "store", root / "run", root / "bundle"

    def mmi(self, *args: str, timeout: float = 900) -> Ran:
        p = subprocess.run([sys.executable, "-m", "multimodal_interest.cli", "-q", *map(str, args)],
                           env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        return Ran(p.returncode, p.stdout, p.stderr)

    def must(self, *args: str) -> Ran:
        ran = self.mmi(*args)
        if ran.rc != 0:
            raise SystemExit(f"setting up: mmi {' '.join(map(str, args))} failed:\n{ran.err[-3000:]}")
        return ran

    def train_args(self, output: Path, store: Path | None = None, *extra: str) -> list:
        return ["train", DATASET, "--source", SOURCE, "--target", TARGET, "--split", SPLIT,
                "--store", store or self.store, "--output", output, *SMALL, *extra]

    def build(self) -> None:
        self.must("fetch", DATASET)
        self.must("embed", DATASET, "--store", self.store)
        self.must(*self.train_args(self.run))
        self.must("export-index", "--model", self.run, "--dataset", DATASET, "--store", self.store,
                  "--split", SPLIT, "--output", self.bundle, "--index", "flat")
        items = json.loads(next((self.bundle / "items").glob(f"{SOURCE}.json")).read_text())
        ids = items["ids"] if isinstance(items, dict) else items
        (self.root / "history.json").write_text(json.dumps(ids[:20]))

    def copy(self, what: Path, name: str) -> Path:
        dest = self.root / "cases" / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(what, dest, symlinks=True)
        return dest

    def recommend(self, bundle: Path) -> Ran:
        return self.mmi("recommend", "--model", bundle, "--platform", TARGET, "--source", SOURCE,
                        "--history", self.root / "history.json", "--json")


# ---------------------------------------------------------------- faults, as files

def flip_bytes(path: Path, n: int = 4096, at: float = 0.5) -> None:
    """Overwrite ``n`` bytes in the middle of ``path`` with other bytes (the file keeps its size)."""
    data = bytearray(path.read_bytes())
    lo = max(0, min(int(len(data) * at), len(data) - n))
    for i in range(lo, min(lo + n, len(data))):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def rewrite_tensor(path: Path, change: Callable) -> None:
    """Load a safetensors file, change one tensor, save it again (a well-formed file)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = change(tensors[name].clone())
    save_file(tensors, path)


def rehash(folder: Path, path: Path, old: str) -> None:
    """Put ``path``'s new sha256 wherever its old one is recorded in ``folder``'s JSON files: the
    file is then consistent with its manifest, so only the content checks can catch it."""
    import hashlib

    new = hashlib.sha256(path.read_bytes()).hexdigest()
    for doc in folder.rglob("*.json"):
        text = doc.read_text()
        if old in text:
            doc.write_text(text.replace(old, new))


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern))
    if not found:
        raise SystemExit(f"probe: nothing matches {pattern} under {folder}")
    return found[0]


def rows_in_store(store: Path) -> dict[str, tuple[int, int]]:
    """platform -> (rows in all shards, distinct item ids) of its text vectors."""
    import pyarrow.parquet as pq

    out = {}
    for platform in (SOURCE, TARGET):
        ids = []
        for shard in (store / platform / "text").rglob("shard-*.parquet"):
            if "quarantine" not in shard.parts:
                ids += pq.read_table(shard, columns=["item_id"]).column("item_id").to_pylist()
        out[platform] = (len(ids), len(set(ids)))
    return out


# ---------------------------------------------------------------- the cases

def refused(ran: Ran, *words: str) -> tuple[str, bool]:
    """A refusal: non-zero exit, no traceback, and the message names what it should."""
    said = ran.said()
    ok = ran.rc != 0 and not ran.traceback and all(w.lower() in said.lower() for w in words)
    return f"exit {ran.rc}: {said[:220]}", ok


def finished(ran: Ran, check: bool = True, note: str = "") -> tuple[str, bool]:
    said = note[:220]
    return f"exit {ran.rc}" + (f": {said}" if said else ""), ran.rc == 0 and not ran.traceback and check


def catalog_cases(w: World) -> list[Row]:
    images = SHARED / "media_samples" / "images"
    cat_photo = images / "chelsea.png"  # a cat
    outside = w.root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.png").write_bytes(cat_photo.read_bytes())
    rows = []

    def case(name: str, expect: str, body: str | bytes | None, judge: Callable[[Ran, Path], tuple[str, bool]],
             ext: str = "csv", setup: Callable[[Path], None] | None = None, extra: tuple = ()) -> None:
        folder = w.root / "cases" / "catalog" / re.sub(r"[^A-Za-z0-9]+", "_", name)
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "media").mkdir(parents=True)
        shutil.copy(cat_photo, folder / "media" / "cat.png")
        path = folder / f"items.{ext}"
        if setup is not None:
            setup(path)
        elif body is not None:
            path.write_bytes(body.encode() if isinstance(body, str) else body)
        ran = w.mmi("embed", path, "--store", folder / "store", "--platform", "shop", *extra)
        got, ok = judge(ran, folder)
        rows.append(Row("catalog", name, expect, got, ok))

    ok_csv = "item_id,title\nA1,red pencil set\nA2,blue ink pen\n"
    case("a catalog file that does not exist", "refused, file named",
         None, lambda r, f: refused(r, "items.csv"))
    case("an empty file (0 bytes)", "refused, file named", "", lambda r, f: refused(r, "items.csv"))
    case("a header and no rows", "refused or nothing to do, said", "item_id,title\n",
         lambda r, f: (f"exit {r.rc}: {r.said()[:200]}", not r.traceback))
    case("no item_id column", "refused, column named", "name,title\nA1,pen\n",
         lambda r, f: refused(r, "item_id"))
    case("the same item id twice", "the row skipped and reported", "item_id,title\nA1,pen\nA1,ink\n",
         lambda r, f: finished(r, "duplicate item_id" in r.out, r.said()))
    case("an empty item id", "the row skipped and reported", "item_id,title\n,pen\nA2,ink\n",
         lambda r, f: finished(r, "row 1" in r.out, r.said()))
    case("non-UTF-8 bytes on line 3", "refused, line 3 named", b"item_id,title\nA1,pen\nA2,caf\xe9 ink\n",
         lambda r, f: refused(r, "line 3"))
    case("a row with an extra field", "refused, line named", "item_id,title\nA1,pen\nA2,ink,extra\n",
         lambda r, f: refused(r, "line"))
    case("an unclosed quote", "refused, file named", 'item_id,title\nA1,"pen\nA2,ink\n',
         lambda r, f: refused(r, "items.csv"))
    case("a text field that is not a column", "refused, column named", ok_csv,
         lambda r, f: refused(r, "colour"), extra=("--text-fields", "colour"))
    case("an unknown file type (.xlsx)", "refused, extension named", "x", lambda r, f: refused(r, ".xlsx"),
         ext="xlsx")
    case("a JSONL line that is not JSON", "refused, line 2 named", '{"item_id": "A1", "title": "pen"}\n{oops\n',
         lambda r, f: refused(r, "line 2"), ext="jsonl")

    def huge(path: Path) -> None:
        path.write_text("item_id,title\nA1," + "pen " * 2_500_000 + "\nA2,ink\n")
    case("a 10 MB text field", "embedded, truncated and counted", None,
         lambda r, f: finished(r, "cut to" in r.out + r.err,
                               next((x.strip() for x in (r.out + r.err).splitlines() if "cut to" in x), "")),
         setup=huge)

    def float_list(path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"item_id": ["A1", "A2"], "title": ["pen", "ink"],
                                 "vec": [[0.1, float("nan")], [0.3, 0.4]]}), path)
    case("a Parquet list of floats named as text", "refused, column named", None,
         lambda r, f: refused(r, "vec"), ext="parquet", setup=float_list, extra=("--text-fields", "title,vec"))

    def image_rows(value: str | Callable[[Path], str]) -> Callable[[Path], None]:
        def setup(path: Path) -> None:
            v = value(path.parent) if callable(value) else value
            path.write_text(f"item_id,title,image\nA1,cat,media/cat.png\nA2,other,{v}\n")
        return setup

    def link(target: Path) -> Callable[[Path], str]:
        def make(folder: Path) -> str:
            (folder / "media" / "link.png").symlink_to(target)
            return "media/link.png"
        return make

    strict = ("--image-column", "image", "--modalities", "image", "--strict")
    case("a symlink to a photo outside the catalog folder", "refused, path named", None,
         lambda r, f: refused(r, "link.png"), setup=image_rows(link(outside / "secret.png")), extra=strict)
    case("a symlink to /etc/passwd", "refused, path named", None,
         lambda r, f: refused(r, "link.png"), setup=image_rows(link(Path("/etc/passwd"))), extra=strict)
    case("an absolute path outside the folder", "refused, path named", None,
         lambda r, f: refused(r, "secret.png"), setup=image_rows(str(outside / "secret.png")), extra=strict)
    case("a ../ path out of the folder", "refused, path named", None,
         lambda r, f: refused(r, "secret.png"), setup=image_rows("../../../outside/secret.png"), extra=strict)
    case("a symlink inside the folder", "embedded", None, lambda r, f: finished(r),
         setup=image_rows(link(Path("cat.png"))), extra=strict)

    def not_image(folder: Path) -> str:
        (folder / "media" / "fake.png").write_text("not a picture")
        return "media/fake.png"

    def half_image(folder: Path) -> str:
        data = cat_photo.read_bytes()
        (folder / "media" / "half.png").write_bytes(data[:len(data) // 2])
        return "media/half.png"
    case("an image file that does not exist (--strict)", "refused, row named", None,
         lambda r, f: refused(r, "missing.png"), setup=image_rows("media/missing.png"), extra=strict)
    case("a text file named .png (--strict)", "refused, row named", None,
         lambda r, f: refused(r, "fake.png"), setup=image_rows(not_image), extra=strict)
    case("half an image file (--strict)", "refused, row named", None,
         lambda r, f: refused(r, "item 'A2'"), setup=image_rows(half_image), extra=strict)
    case("a missing image without --strict", "others embedded, the row reported", None,
         lambda r, f: finished(r, "A2" in r.out + r.err), setup=image_rows("media/missing.png"),
         extra=strict[:-1])
    return rows


def store_cases(w: World) -> list[Row]:
    rows = []
    n_items = {p: rows_in_store(w.store)[p][1] for p in (SOURCE, TARGET)}

    def broken(name: str, expect: str, damage: Callable[[Path], None]) -> None:
        store = w.copy(w.store, f"store-{name}")
        damage(only(store / TARGET / "text", "shard-*.parquet"))
        got, ok = refused(w.mmi(*w.train_args(w.root / "cases" / f"run-{name}", store)), "shard")
        rows.append(Row("store", f"{name}: mmi train", "refused, shard named", got, ok))
        ran = w.mmi("embed", DATASET, "--store", store)
        counts = rows_in_store(store)
        whole = all(counts[p] == (n_items[p], n_items[p]) for p in (SOURCE, TARGET))
        quarantined = len(list(store.rglob("quarantine/*")))
        got, ok = finished(ran, whole and quarantined > 0,
                           f"{quarantined} shard(s) quarantined; every item once: {whole}")
        rows.append(Row("store", f"{name}: mmi embed again", "shard quarantined, its items re-encoded", got, ok))

    broken("4 KB overwritten inside a shard", "", lambda s: flip_bytes(s))
    broken("a shard cut in half", "", lambda s: s.write_bytes(s.read_bytes()[:s.stat().st_size // 2]))

    def other_width(shard: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = pq.read_table(shard)
        flat = pa.array(np.zeros(len(t) * 7, dtype=np.float32))
        t = t.set_column(t.schema.get_field_index("vector"), "vector", pa.FixedSizeListArray.from_arrays(flat, 7))
        pq.write_table(t, shard)  # named with its new checksum: only the width check can catch it
        shard.rename(shard.with_name(f"{shard.name.rsplit('-', 1)[0]}-{sha(shard)}.parquet"))
    broken("a shard of another width", "", other_width)

    store = w.copy(w.store, "store-manifest")
    only(store / TARGET / "text", "manifest.json").write_text("{not json")
    got, ok = refused(w.mmi(*w.train_args(w.root / "cases" / "run-manifest", store)), "manifest.json")
    rows.append(Row("store", "a manifest that is not JSON: mmi train", "refused, file named", got, ok))

    fresh = w.root / "cases" / "store-concurrent"
    shutil.rmtree(fresh, ignore_errors=True)
    cmd = [sys.executable, "-m", "multimodal_interest.cli", "-q", "embed", DATASET, "--store", str(fresh)]
    jobs = [subprocess.Popen(cmd, env=w.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [j.communicate(timeout=900) for j in jobs]
    counts = rows_in_store(fresh)
    once = all(counts[p] == (n_items[p], n_items[p]) for p in (SOURCE, TARGET))
    rcs = [j.returncode for j in jobs]
    rows.append(Row("store", "two `mmi embed` at once on one store", "every item encoded once",
                    f"exit {rcs}; rows {[counts[p][0] for p in (SOURCE, TARGET)]} for "
                    f"{[n_items[p] for p in (SOURCE, TARGET)]} items",
                    once and rcs == [0, 0] and not any("Traceback" in e for _, e in outs)))

    killed = w.root / "cases" / "store-killed"
    shutil.rmtree(killed, ignore_errors=True)
    job = subprocess.Popen([*cmd[:-1], str(killed), "--shard-size", "64"], env=w.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(killed.rglob("shard-*.parquet"))) < 3 and job.poll() is None:
        time.sleep(0.2)
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = sum(rows_in_store(killed)[p][0] for p in (SOURCE, TARGET))
    ran = w.mmi("embed", DATASET, "--store", killed)
    counts = rows_in_store(killed)
    once = all(counts[p] == (n_items[p], n_items[p]) for p in (SOURCE, TARGET))
    got, ok = finished(ran, once, f"{before} rows kept from the killed run; every item once: {once}")
    rows.append(Row("store", "`mmi embed` killed (SIGKILL) mid-way, run again", "finishes, every item once", got, ok))
    return rows


def training_cases(w: World) -> list[Row]:
    rows = []
    newest = lambda run: sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))  # noqa: E731

    run = w.copy(w.run, "run-pickle")
    marker = w.root / "cases" / "PICKLE-RAN"
    marker.unlink(missing_ok=True)
    payload = ("import pickle, pathlib\nclass P:\n    def __reduce__(self):\n"
               f"        return (pathlib.Path.touch, (pathlib.Path({str(marker)!r}),))\n")
    scope: dict = {}
    exec(payload, scope)  # the attacker's object, pickled with the standard library
    import pickle

    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (newest(run)[-1] / name).write_bytes(pickle.dumps(scope["P"]()))
    ran = w.mmi(*w.train_args(run, None, "--set", "epochs=3"))
    got, ok = finished(ran, not marker.exists(), f"payload ran: {marker.exists()}")
    rows.append(Row("training", "a planted pickle (touches a file) in the newest checkpoint, resume",
                    "never unpickled; resume goes on", got, ok))

    run = w.copy(w.run, "run-corrupt")
    steps = newest(run)
    flip_bytes(only(steps[-1], "*.safetensors"), 64)
    ran = w.mmi(*w.train_args(run, None, "--set", "epochs=3"))
    fell_back = steps[-2].name in ran.err if len(steps) > 1 else False
    got, ok = finished(ran, fell_back, ran.said()[:220])
    rows.append(Row("training", "a corrupt newest checkpoint, resume", "warned, file named; previous one taken",
                    got, ok))

    run = w.copy(w.run, "run-tmp")
    (run / "checkpoints" / "tmp-999").mkdir()
    (run / "checkpoints" / "tmp-999" / "model.safetensors").write_bytes(b"partial")
    ran = w.mmi(*w.train_args(run, None, "--set", "epochs=3"))
    got, ok = finished(ran, not (run / "checkpoints" / "tmp-999").exists(), "partial tmp-999/ removed: "
                       f"{not (run / 'checkpoints' / 'tmp-999').exists()}")
    rows.append(Row("training", "a partial tmp-N/ checkpoint left by a full disk, resume", "removed; resume goes on",
                    got, ok))

    run = w.copy(w.run, "run-settings")
    got, ok = refused(w.mmi(*w.train_args(run, None, "--set", "lr=0.5")), "lr")
    rows.append(Row("training", "resume with another learning rate", "refused, setting named", got, ok))
    got, ok = refused(w.mmi(*w.train_args(w.root / "cases" / "run-typo", None, "--set", "lrate=0.5")), "lrate")
    rows.append(Row("training", "a misspelt --set key", "refused, key named", got, ok))
    got, ok = refused(w.mmi(*w.train_args(w.root / "cases" / "run-type", None, "--set", "epochs=many")), "epochs")
    rows.append(Row("training", "a --set value of the wrong type", "refused, key named", got, ok))

    run = w.root / "cases" / "run-killed"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "multimodal_interest.cli", "-q",
           *map(str, w.train_args(run, None, "--set", "checkpoint_every=3"))]
    job = subprocess.Popen(cmd, env=w.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not newest(run) and job.poll() is None:
        time.sleep(0.2)
    job.send_signal(signal.SIGKILL)
    job.wait()
    ran = w.mmi(*w.train_args(run, None, "--set", "checkpoint_every=3"))
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").exists() else []
    got, ok = finished(ran, [r["epoch"] for r in log] == [1, 2], f"epochs logged {[r['epoch'] for r in log]}")
    rows.append(Row("training", "`mmi train` killed (SIGKILL) after its first checkpoint, run again",
                    "resumes and finishes", got, ok))

    run = w.copy(w.run, "run-inf")
    weights = only(run / "model", "*.safetensors")
    flip_bytes(weights, 16, at=0.9)
    got, ok = refused(w.mmi("export-index", "--model", run, "--dataset", DATASET, "--store", w.store,
                            "--split", SPLIT, "--output", w.root / "cases" / "bundle-from-flipped"),
                      weights.name)
    rows.append(Row("training", "a flipped byte in a run's model weights: export-index", "refused, file named",
                    got, ok))
    run = w.copy(w.run, "run-inf2")
    weights = only(run / "model", "*.safetensors")
    old = sha(weights)
    rewrite_tensor(weights, lambda t: t.fill_(float("inf")))
    rehash(run / "model", weights, old)
    got, ok = refused(w.mmi("export-index", "--model", run, "--dataset", DATASET, "--store", w.store,
                            "--split", SPLIT, "--output", w.root / "cases" / "bundle-from-inf"), "finite")
    rows.append(Row("training", "+inf weights in a run's model, hashes updated to match: export-index",
                    "refused, file and tensor named", got, ok))
    return rows


def bundle_cases(w: World) -> list[Row]:
    rows = []
    got, ok = finished(w.recommend(w.bundle))
    rows.append(Row("bundle", "the bundle as exported: mmi recommend", "served", got, ok))

    def tamper(name: str, pattern: str, change: Callable[[Path], None], words: Callable[[Path], str],
               expect: str = "refused, file named", consistent: bool = False) -> None:
        bundle = w.copy(w.bundle, f"bundle-{name}")
        path = only(bundle, pattern)
        old = sha(path)
        change(path)
        if consistent:
            rehash(bundle, path, old)
        got, ok = refused(w.recommend(bundle), words(path))
        rows.append(Row("bundle", f"{name}: mmi recommend", expect, got, ok))

    tamper("one item bias set to +100 in targets/", f"targets/{TARGET}.safetensors",
           lambda p: rewrite_tensor(p, lambda t: t.view(-1)[:1].fill_(100.0) and t), lambda p: p.name)
    tamper("an injected id in items/", f"items/{TARGET}.json",
           lambda p: p.write_text(p.read_text().replace('"', '"EVIL', 2).replace('"EVIL', '"', 1)), lambda p: p.name)
    tamper("a flipped byte in the model weights", "model/**/*.safetensors", lambda p: flip_bytes(p, 16, 0.9),
           lambda p: p.name)
    tamper("a corrupt FAISS index", "index/*.faiss", lambda p: flip_bytes(p, 64, 0.1), lambda p: p.name)
    tamper("+inf item vectors, hashes updated to match", f"targets/{TARGET}.safetensors",
           lambda p: rewrite_tensor(p, lambda t: t.fill_(float("inf"))), lambda p: "finite",
           "refused, file and tensor named", consistent=True)
    bundle = w.copy(w.bundle, "bundle-no-manifest")
    (bundle / "manifest.json").unlink()
    got, ok = refused(w.recommend(bundle), "manifest")
    rows.append(Row("bundle", "manifest.json deleted: mmi recommend", "refused, file named", got, ok))

    bundle = w.copy(w.bundle, "bundle-serve")
    flip_bytes(only(bundle, "index/*.faiss"), 64, 0.1)
    ran = w.mmi("serve", "--model", bundle, "--port", str(free_port()), timeout=120)
    got, ok = refused(ran, ".faiss")
    rows.append(Row("bundle", "a corrupt FAISS index: mmi serve", "does not start; file named", got, ok))
    return rows


# ---------------------------------------------------------------- HTTP

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, w: World, bundle: Path):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "multimodal_interest.cli", "-q", "serve", "--model",
                                      str(bundle), "--port", str(self.port)], env=w.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while True:
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"mmi serve did not start: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def http_cases(w: World, server: Server, history: list[str]) -> list[Row]:
    import httpx

    good = {"platform": TARGET, "source": SOURCE, "history": history, "k": 5}
    document = httpx.post(server.url + "/users/embed", json={"source": SOURCE, "history": history}, timeout=60).json()
    cases: list[tuple[str, str, str, bytes | dict, tuple[int, ...]]] = [
        ("a good request", "POST", "/recommend", good, (200,)),
        ("a lone surrogate as the platform", "POST", "/recommend",
         b'{"platform": "\\ud800", "source": "comedy", "history": ["1"]}', (422,)),
        ("a lone surrogate in /users/embed", "POST", "/users/embed",
         b'{"source": "\\udfff", "history": ["\\ud800"]}', (422,)),
        ("control characters in an item id", "POST", "/recommend",
         {**good, "history": ["\u0000\u0007\u001b[2J"]}, (422,)),
        ("an unknown platform", "POST", "/recommend", {**good, "platform": "nowhere"}, (422,)),
        ("unknown item ids", "POST", "/recommend", {**good, "history": ["no-such-item"]}, (422,)),
        ("k = 10**12", "POST", "/recommend", {**good, "k": 10**12}, (422,)),
        ("k = -1", "POST", "/recommend", {**good, "k": -1}, (422,)),
        ("k as a string", "POST", "/recommend", {**good, "k": "5"}, (422,)),
        ("an unknown field", "POST", "/recommend", {**good, "debug": True}, (422,)),
        ("a history of 1,001 items", "POST", "/recommend", {**good, "history": history[:1] * 1001}, (422,)),
        ("NaN in an interest document", "POST", "/recommend",
         json.dumps({"platform": TARGET, "interest": {**document, "vector": [float("nan")] * len(document["vector"])}}
                    ).encode(), (422,)),
        ("a body that is not JSON", "POST", "/recommend", b"{nope", (400, 422)),
        ("JSON nested 100,000 deep", "POST", "/recommend", b"[" * 100_000 + b"]" * 100_000, (400, 413, 422)),
        ("a 2 MB body", "POST", "/recommend", b'{"platform": "' + b"x" * (2 << 20) + b'"}', (413,)),
        ("an integer of 5,000 digits", "POST", "/recommend",
         b'{"platform": "drama", "k": ' + b"9" * 5000 + b"}", (400, 422)),
        ("an empty body", "POST", "/recommend", b"", (400, 422)),
        ("GET on a POST route", "GET", "/recommend", b"", (405,)),
    ]
    rows = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name, method, path, body, want in cases:
            if isinstance(body, dict):
                r = client.request(method, path, json=body)
            else:
                r = client.request(method, path, content=body, headers={"content-type": "application/json"})
            try:
                detail = json.dumps(r.json().get("detail", ""))[:160] if r.status_code != 200 else "top-5 items"
            except ValueError:
                detail = r.text[:160]
            rows.append(Row("http", f"{method} {path}: {name}", " or ".join(map(str, want)),
                            f"{r.status_code}: {detail}", r.status_code in want))
    return rows


async def _load(url: str, bodies: list[dict], concurrency: int, total: int) -> tuple[list[float], int, float]:
    import httpx

    latencies, errors, sent = [], 0, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def worker() -> None:
            nonlocal errors, sent
            while sent < total:
                body = bodies[sent % len(bodies)]
                sent += 1
                t = time.perf_counter()
                r = await client.post("/recommend", json=body)
                latencies.append((time.perf_counter() - t) * 1e3)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - t0


def load_rows(server: Server, history_pool: list[str], requests: int, concurrency: int) -> list[list]:
    rng = np.random.default_rng(0)
    rows = []
    for explain in (0, 3):
        bodies = [{"platform": TARGET, "source": SOURCE, "k": 10, "explain": explain,
                   "history": [str(x) for x in rng.choice(history_pool, 30, replace=False)]} for _ in range(256)]
        before = server.rss_mib()
        latencies, errors, seconds = asyncio.run(_load(server.url, bodies, concurrency, requests))
        after = server.rss_mib()
        rows.append([explain, len(latencies), concurrency, errors, f"{len(latencies) / seconds:.1f}",
                     f"{np.percentile(latencies, 50):.1f}", f"{np.percentile(latencies, 99):.1f}",
                     f"{before:,.0f}", f"{after:,.0f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, help="keep the deployment and the broken copies here")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--areas", default="catalog,store,training,bundle,http")
    args = p.parse_args(argv)
    start = time.perf_counter()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="mmi-reliability-"))
    root.mkdir(parents=True, exist_ok=True)
    w = World(root.resolve())
    print(f"machine: {machine()}; work folder {w.root}\n", flush=True)
    if not (w.bundle / "manifest.json").exists():
        w.build()
    areas = args.areas.split(",")
    rows: list[Row] = []
    for area, cases in (("catalog", catalog_cases), ("store", store_cases), ("training", training_cases),
                        ("bundle", bundle_cases)):
        if area in areas:
            t = time.perf_counter()
            rows += cases(w)
            print(f"{area}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    load = []
    if "http" in areas:
        history = json.loads((w.root / "history.json").read_text())
        pool = json.loads(only(w.bundle / "items", f"{SOURCE}.json").read_text())
        pool = pool["ids"] if isinstance(pool, dict) else pool
        server = Server(w, w.bundle)
        try:
            rows += http_cases(w, server, history)
            load = load_rows(server, pool, args.requests, args.concurrency)
            rows.append(Row("http", "the server after all of the above", "still answers /health",
                            str(__import__("httpx").get(server.url + "/health").status_code),
                            __import__("httpx").get(server.url + "/health").status_code == 200))
        finally:
            server.stop()
    handled = sum(r.handled for r in rows)
    print(f"## {handled} of {len(rows)} cases handled\n")
    print(markdown_table(["area", "case", "expected", "what came back", "handled"],
                         [[r.area, r.case, r.expect, r.got.replace("|", "\\|").replace("\n", " "),
                           "yes" if r.handled else "**NO**"] for r in rows]))
    if load:
        print(f"\n## HTTP load on 127.0.0.1: {args.requests} POST /recommend per row, {args.concurrency} "
              f"connections (client and server share this machine)\n")
        print(markdown_table(["explain", "requests", "connections", "errors", "req/s", "p50 ms", "p99 ms",
                              "server RSS MiB before", "after"], load))
    print(f"\ncommand: PYTHONPATH=. python benchmarks/reliability.py {' '.join(argv or sys.argv[1:])}; "
          f"{time.perf_counter() - start:.0f} s")
    return 0 if handled == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
