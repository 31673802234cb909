"""Tuning only the top layers from cached lower-layer states (``--train-layers`` without LoRA,
training/finetune/lower_cache.py): the cached path encodes as the whole encoder does, gives
one step the loss and gradients the uncached path gives, computes each item's lower layers
once, keeps to its memory bound (dropping and recomputing the same bits), and a run killed
mid-epoch resumes to the weights of an uninterrupted one. On a 3-layer tiny random BERT, top
layer tuned (tests/finetune_world.py)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from finetune_world import tiny_encoder, words, write_world
from launch import accelerate_launch
from test_finetune import SETTINGS, content_ndcg10, killed_run, tensors

# fp16 storage of the lower states: item vectors (normalised) within this of the whole
# encoder's; 1e-4 measured here, 4e-5 on MiniLM with 4 layers cached
EMBED_ATOL = 1e-3
CACHED = {**SETTINGS, "train_layers": 1, "lr": 1e-2}  # the top layer alone wants a larger step


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(dataset folder, 3-layer base encoder folder, task, texts); items of 5 to 9 tokens, so
    chunks pad."""
    from multimodal_interest.data.dataset import CrossPlatformDataset
    from multimodal_interest.training.finetune import item_texts

    tmp = tmp_path_factory.mktemp("ft-cache-world")
    base = tiny_encoder(tmp / "base", words(6, 12), layers=3)
    data = write_world(tmp / "data", more_noise=4)
    dataset = CrossPlatformDataset.load(data)
    task = dataset.cold_start("src", "tgt", "published")
    return data, base, task, {p: item_texts(dataset, p) for p in task.platforms}


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """One uninterrupted cached run of CACHED, and how often each item went through the
    lower layers in it."""
    from multimodal_interest.training.finetune import FinetuneConfig, finetune
    from multimodal_interest.training.finetune.lower_cache import LowerLayerCache

    _, base, task, texts = world
    counts, lower = Counter(), LowerLayerCache.lower

    def counted(self, platform, b):
        states = lower(self, platform, b)
        counts.update((platform, int(i)) for i in self.members[platform][b * self.block:][:len(states)])
        return states

    out = tmp_path_factory.mktemp("ft-cache-ref") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LowerLayerCache, "lower", counted)
        result = finetune(task, texts, f"finetuned:{base}", FinetuneConfig(**CACHED), out, progress_bar=False)
    return result, counts


def towers_for(world, train_layers: int = 1, cached: bool = True, limit_mb: float = 1024):
    """(InterestTowers with only the top ``train_layers`` learning, from the cache or not;
    the item tokens)."""
    from multimodal_interest.training.finetune.lower_cache import LowerLayerCache
    from multimodal_interest.training.finetune.model import InterestTowers, adapt, load_base
    from multimodal_interest.training.finetune.tokens import ItemTokens

    _, base, task, texts = world
    st, _ = load_base(f"finetuned:{base}")
    st.max_seq_length = SETTINGS["max_seq_length"]
    tokens = {p: ItemTokens.build(st.preprocess, texts[p], st.tokenizer.pad_token_id or 0) for p in task.platforms}
    adapt(st, 0, 16.0, train_layers)
    lower = LowerLayerCache.for_encoder(st, train_layers, tokens, (task.source, task.target), limit_mb) \
        if cached else None
    assert (lower is not None) == cached  # a BERT stack splits
    return InterestTowers(st, 0.05, chunk_size=7, lower=lower), tokens


def test_the_cached_path_encodes_every_item_as_the_whole_encoder_does(world):
    _, _, task, _ = world
    towers, tokens = towers_for(world, train_layers=2)  # one layer cached, two run
    towers.eval()
    for p in task.platforms:
        items = np.random.default_rng(0).permutation(len(tokens[p]))  # mixed lengths in every chunk of 7
        assert len(set(tokens[p].lengths(items[:7]))) > 1
        ids, mask = tokens[p].batch(items)
        with torch.no_grad():
            whole = towers.encoder({"input_ids": ids, "attention_mask": mask})["sentence_embedding"]
            cached = towers.lower.embed([(p, int(i)) for i in items], chunk_size=7)
        torch.testing.assert_close(cached, whole, atol=EMBED_ATOL, rtol=0)
        assert torch.allclose(cached.norm(dim=1), torch.ones(len(items)), atol=1e-5)  # normalised as the model does


def step(towers, batch) -> tuple[float, dict[str, torch.Tensor]]:
    """One step's loss and the gradients it leaves, by parameter name (those that got one)."""
    towers.eval()  # dropout off on both paths: they compute the same function
    loss = towers(batch)["loss"]
    loss.backward()
    return float(loss.detach()), {n: p.grad for n, p in towers.named_parameters() if p.grad is not None}


def test_one_step_gives_the_uncached_loss_and_gradients_and_none_below_the_top(world, monkeypatch):
    from multimodal_interest.training.finetune import lower_cache
    from multimodal_interest.training.finetune.batches import FinetunePlanner

    _, _, task, _ = world
    plain, tokens = towers_for(world, cached=False)
    planner = FinetunePlanner(task, tokens, batch_size=16, max_len=20, negatives=8, seed=0)
    batch = planner.build(planner.plan(0)[0])
    assert (batch["attention_mask"] == 0).any()  # items of several lengths: the masks matter
    loss, want = step(plain, batch)
    top = {n for n, _ in plain.named_parameters() if ".layer.2." in n}
    assert set(want) == top and all(g.abs().max() > 0 for n, g in want.items() if "key.bias" not in n)

    got_loss, got = step(towers_for(world, cached=True)[0], batch)
    assert set(got) == top  # the embeddings and lower layers get no gradient at all
    assert got_loss == pytest.approx(loss, rel=1e-3)
    scale = max(float(g.abs().max()) for g in want.values())  # one scale: a key bias's gradient is 0 but for rounding
    for n, g in want.items():
        torch.testing.assert_close(got[n], g, atol=3e-3 * scale, rtol=0, msg=n)  # 1e-3 measured (fp16 states)

    monkeypatch.setattr(lower_cache, "STORAGE", torch.float32)  # unrounded: only the summation order differs
    exact_loss, exact = step(towers_for(world, cached=True)[0], batch)
    assert exact_loss == pytest.approx(loss, rel=1e-6)
    for n, g in want.items():
        torch.testing.assert_close(exact[n], g, atol=1e-5 * scale, rtol=0, msg=n)


def test_the_memory_bound_drops_the_least_recently_used_and_recomputes_the_same_bits(world):
    """Blocks of 2 items here (a block is what is computed and dropped at once)."""
    from multimodal_interest.training.finetune.lower_cache import LowerLayerCache

    _, _, task, _ = world
    towers, tokens = towers_for(world)
    src, st = task.source, towers.encoder

    def cache(limit_mb: float = 1024, block: int = 2) -> LowerLayerCache:
        return LowerLayerCache(st, 1, tokens, (task.source, task.target), limit_mb, block)

    members = cache().members[src].reshape(-1, 2)  # [blocks, 2] items of each block
    n = tokens[src].lengths(members)  # [blocks, 2]
    same = np.flatnonzero((n[:, 0] == n[:, 1]) & (n[:, 0] == np.bincount(n[:, 0]).argmax()))
    assert len(same) >= 4  # four blocks of one size
    a, b, c, d = ((src, int(members[i, 0])) for i in same[:4])
    partner = (src, int(members[same[0], 1]))  # a's block mate
    size = 2 * int(n[same[0], 0]) * 32 * 2  # bytes of a block: 2 x [T, 32] float16
    first = dict(zip((a, b, c, d), (s.clone() for s in cache().states([a, b, c, d]))))

    lower = cache(limit_mb=3 * size / 2 ** 20)  # room for three blocks
    lower.states([a, b, c])
    lower.states([partner])  # a's block used again, and not computed again: b's is now the least recent
    assert lower.computed == 6 and lower.bytes == 3 * size
    lower.states([d])
    assert lower.bytes == 3 * size and a in held(lower) and partner in held(lower) and b not in held(lower)
    again = lower.states([b])[0]  # dropped: computed again, the same bits as computed first
    assert lower.computed == 10 and c not in held(lower) and torch.equal(again, first[b])
    assert all(torch.equal(lower.states([k])[0], first[k]) for k in (a, d)) and lower.computed == 10

    none, big = cache(limit_mb=0, block=32), cache(block=32)  # nothing kept: every step recomputes, same vectors
    keys = [(p, i) for p in task.platforms for i in range(len(tokens[p]))]
    st.eval()
    with torch.no_grad():
        x, y = none.embed(keys, 7), big.embed(keys, 7)
    assert none.bytes == 0 and not none.entries and big.bytes > 0
    assert torch.equal(x, y)


def held(cache) -> set[tuple[str, int]]:
    """The items whose block the cache holds."""
    return {(p, int(i)) for p, b in cache.entries for i in cache.members[p][b * cache.block:(b + 1) * cache.block]}


def test_a_cached_run_learns_computing_each_item_once(world, reference):
    from multimodal_interest.training.finetune import FinetuneConfig

    _, base, task, _ = world
    result, counts = reference
    log = result.history
    assert [r["epoch"] for r in log] == [0, 1, 2, 3] and log[-1]["loss"] < 0.8 * log[1]["loss"]
    assert result.best_valid > log[0]["valid_ndcg10"] + 0.2  # from chance to the topics
    assert set(counts.values()) == {1}  # 3 epochs and 4 validations, every item's lower layers once
    assert {i for p, i in counts if p == task.target} == set(range(task.n_items[task.target]))
    was, now = tensors(base), tensors(result.encoder_dir)
    changed = {k for k in was if not torch.equal(was[k], now[k])}
    assert changed and all(".layer.2." in k for k in changed)  # the top layer only
    assert FinetuneConfig(**CACHED).lower_cache_mb == 1024  # the default, that the limit test scales from


def test_a_cached_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(world, reference, tmp_path):
    """The resumed run starts with an empty cache: the items it recomputes must be the bits
    the uninterrupted run had cached (and its smaller limit is allowed on resume)."""
    from multimodal_interest.training.finetune import FinetuneConfig, finetune

    _, base, task, texts = world
    settings = {**CACHED, "checkpoint_every": 4}
    out = killed_run(world, settings, tmp_path)
    resumed = finetune(task, texts, f"finetuned:{base}", FinetuneConfig(**{**settings, "lower_cache_mb": 0.01}),
                       out, progress_bar=False)
    timing = ("seconds", "train_items_per_s", "valid_seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.history] == \
           [{k: v for k, v in r.items() if k not in timing} for r in reference[0].history]
    want, got = tensors(reference[0].encoder_dir), tensors(resumed.encoder_dir)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name


def test_two_processes_each_with_its_own_cache_learn_as_one_does(world, reference, tmp_path):
    """Launched in two processes (the CLI), each caches the items of its own share of the
    steps and of validation (in 20 KB: less than the catalogs, so blocks are dropped); the runs
    differ by training noise (each process's in-batch negatives are its own): within two
    standard errors of the one-process run's NDCG@10."""
    data, base, task, texts = world
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**CACHED, "lower_cache_mb": 0.02}.items()]
    out = accelerate_launch("scripts/finetune.py", str(data), "--source", "src", "--target", "tgt",
                            "--encoder", f"text=finetuned:{base}", "--output", str(tmp_path / "two"), *flags)
    assert "best validation NDCG@10" in out.stdout
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    one = content_ndcg10(reference[0].encoder_dir, task, texts, task.valid_users)
    two = content_ndcg10(tmp_path / "two" / "encoder", task, texts, task.valid_users)
    assert two.mean() == pytest.approx(max(r["valid_ndcg10"] for r in log), abs=1e-3)  # fp16 states: near ties
    assert abs(two.mean() - one.mean()) <= 2 * one.std(ddof=1) / np.sqrt(len(one))
    was, now = tensors(base), tensors(tmp_path / "two" / "encoder")
    assert all(".layer.2." in k for k in was if not torch.equal(was[k], now[k]))
