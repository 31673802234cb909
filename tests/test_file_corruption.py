"""The file loaders under random damage: real files of a small world (a dataset folder, an
embedding store, a training run, a bundle; :mod:`file_world`) are truncated, have bytes
flipped, are replaced by deep nesting, get YAML aliases appended, or become links out of
their folder -- with the hashes re-recorded or not. Loading then ends in one of two ways:
a clean load, or an error of the project's (``ValueError``/``OSError``, what the CLI prints as
one line) that names the file or its folder. Never another exception, and never more than
:data:`MEMORY_BUDGET` of memory above what the process had already used.

Hypothesis draws the damage (derandomized, a bounded number of examples per part), so the
run is the same every time and takes a few seconds per part."""
from __future__ import annotations

import hashlib
import os
import resource
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from file_world import rehash, world as build_world
from fusion import InterestModel
from multimodal_interest.bundle import Bundle
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.run import Run
from multimodal_interest.store import EmbeddingStore

MEMORY_BUDGET = 500 << 20  # bytes of peak memory a load may add
EXAMPLES = 30  # per part


def load_data(folder: Path) -> None:
    CrossPlatformDataset.load(folder).split("s0")


def load_store(folder: Path) -> None:
    for platform in ("a", "b"):
        EmbeddingStore(folder).load(platform, "text")


def load_run(folder: Path) -> None:
    run = Run(folder)
    run.task(), run.log()
    InterestModel.from_pretrained(run.model_dir)


PARTS = {  # part -> (what loads it, the files damaged: relative paths, * as in glob)
    "data": (load_data, ["dataset.yaml", "items/a.csv", "interactions.csv", "splits/s0.csv"]),
    "store": (load_store, ["b/text/*/manifest.json", "b/text/*/shard-*.parquet"]),
    "run": (load_run, ["task.json", "log.jsonl", "model/manifest.json", "model/fusion/config.json",
                       "model/fusion/model.safetensors", "model/targets/b/config.json",
                       "model/targets/b/model.safetensors"]),
    "bundle": (Bundle.load, ["manifest.json", "items/b.json", "titles/b.json", "features/a.safetensors",
                             "targets/b.safetensors", "model/manifest.json", "model/fusion/model.safetensors",
                             "model/targets/b/config.json"]),
}

DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=4)),
    st.tuples(st.just("nest"), st.sampled_from([70, 5_000, 100_000])),
    st.tuples(st.just("alias"), st.sampled_from(["bomb", "loop", "repeat"])),
    st.tuples(st.just("link"), st.sampled_from(["secret", "/etc/passwd", "folder"])),
)


def damage(path: Path, how: tuple, outside: Path) -> None:
    """Apply one damage to the file at ``path`` (``outside``: a folder beside the world's)."""
    kind, arg = how
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[:int(len(data) * arg)])
    elif kind == "flip":
        buf = bytearray(data)
        for where, bits in arg:
            if buf:
                buf[min(int(where * len(buf)), len(buf) - 1)] ^= bits
        path.write_bytes(bytes(buf))
    elif kind == "nest":
        path.write_bytes(b"[" * arg + b"]" * arg)
    elif kind == "alias":
        text = {"bomb": "l0: &l0 {x: 1}\n" + "".join(
                    f"l{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(10)) + "}\n" for i in range(1, 9)),
                "loop": "loop: &loop {self: *loop}\n", "repeat": "name: again\n"}[arg]
        path.write_bytes(data + b"\n" + text.encode())
    else:
        target = {"secret": outside / "secret.txt", "/etc/passwd": Path("/etc/passwd"), "folder": outside}[arg]
        path.unlink()
        path.symlink_to(target)


def rehash_store(folder: Path) -> None:
    """Give every shard the name its bytes' sha256 makes, as a tamperer would."""
    for shard in folder.glob("*/*/*/shard-*.parquet"):
        if not shard.is_symlink():
            sha = hashlib.sha256(shard.read_bytes()).hexdigest()
            shard.rename(shard.with_name(f"{shard.stem.rsplit('-', 1)[0]}-{sha}.parquet"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory)


@pytest.mark.parametrize("part", sorted(PARTS))
def test_damaged_files_load_or_are_named_within_the_memory_budget(world, tmp_path_factory, part):
    load, patterns = PARTS[part]
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("TOP-SECRET-TOKEN-123\n")

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(pattern=st.sampled_from(patterns), how=DAMAGE, rehashed=st.booleans())
    def check(pattern: str, how: tuple, rehashed: bool) -> None:
        folder = tmp_path_factory.mktemp(part) / part
        shutil.copytree(world[part], folder, symlinks=True)
        path = next(folder.glob(pattern))
        damage(path, how, outside)
        if rehashed:
            rehash_store(folder) if part == "store" else rehash(folder)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10  # KiB on Linux
        try:
            load(folder)
            event("loaded")  # --hypothesis-show-statistics: how often damage went unnoticed
        except (ValueError, OSError) as e:  # the project's errors: the CLI prints them as one line
            event(type(e).__name__)
            message = str(e)
            assert str(folder) in message or path.name in message, (how, message)
            assert "TOP-SECRET-TOKEN-123" not in message and "root:x:0:0" not in message, (how, message)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
        assert peak - before <= MEMORY_BUDGET, (how, f"{(peak - before) >> 20} MiB")
        shutil.rmtree(folder.parent)

    check()
