"""The closed-form linear interest model: what it fits, what validation chooses, and that the
saved model scores as the fit does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion import InterestModel
from multimodal_interest.evaluate import evaluate
from multimodal_interest.run import Run
from multimodal_interest.training import TrainConfig
from multimodal_interest.training.closed_form import (CONST, IDS, Featurizer, Trial, Validator, bags, block_scales,
                                                      combine, cross_kernels, fit_closed_form, fit_rows, ndcg10,
                                                      optimism)
from multimodal_interest.training.closed_form.validate import csr_of
from multimodal_interest.training.scoring import ModelScorer
from tests.launch import accelerate_launch
from tests.synthetic import synthetic_task


@pytest.fixture(scope="module")
def world():
    return synthetic_task()


def raw_scores(model: InterestModel, task, users: np.ndarray) -> torch.Tensor:
    """``u_raw . V``: the fit's own scores, before the interest vector is made unit length."""
    h = task.source_histories(users, model.fusion.config.max_len)
    with torch.no_grad():
        u = model.fusion.pooled(h.items, h.mask, task.source)
        return u @ model.spaces[task.target].learned.T


def test_the_fit_learns_the_mapping_and_its_model_scores_as_saved(world, tmp_path):
    task, features = world
    result = fit_closed_form(task, features, TrainConfig())
    # full rank (dim None: min(1024, 100 target items, fit users)): the saved model is the best fit
    assert result.best.rank == 100 and any(t is result.best for t in result.trials)
    searched = [t for t in result.trials if t.rank is None and (t.lam, t.weights) == (result.best.lam, result.best.weights)]
    assert result.valid_ndcg10 == pytest.approx(result.best.valid_ndcg10, abs=1e-3)
    solved = next(t for t in result.trials if t.path == "exact" and t.rank == 100)
    assert solved.valid_ndcg10 == pytest.approx(searched[0].valid_ndcg10, abs=1e-3)  # full rank: the kernel ridge
    popular = np.bincount(task.train.loc[task.train["platform"] == task.target, "item_idx"],
                          minlength=task.n_items[task.target]).astype(np.float32)
    pop = evaluate(lambda us: torch.from_numpy(np.tile(popular, (len(us), 1))), task, task.valid_users, ks=(10,))
    assert result.valid_ndcg10 > pop.values["ndcg@10"].mean() + 0.05

    result.model.save_pretrained(tmp_path / "m")
    loaded = InterestModel.from_pretrained(tmp_path / "m", encoder_fingerprints=features.fingerprints)
    features.attach(loaded, task.platforms)
    users = task.test_users
    assert torch.equal(ModelScorer(loaded, task)(users), ModelScorer(result.model, task)(users))


def test_the_width_is_the_fits_rank_whatever_number_it_is():
    task, features = synthetic_task(n_items=(120, 99))  # 99: no transformer head count divides it
    model = fit_closed_form(task, features, TrainConfig(), lam=10.0).model
    assert model.fusion.config.dim == 99 and model.spaces[task.target].learned.shape == (99, 99)


def test_a_huge_lambda_gives_the_priors_ranking(world):
    """lam -> inf: alpha -> Y / lam, so the scores are the kernel's co-occurrence prior
    k(z) Y; with the constant block alone, that is the fit users' popularity."""
    task, features = world
    model = fit_closed_form(task, features, TrainConfig(), lam=1e9, weights={CONST: 1.0}).model
    y = fit_rows(task, 50, 0).targets
    popularity = np.asarray(y.sum(0)).ravel()
    scores = ModelScorer(model, task)(task.valid_users).numpy()
    for row in scores:
        assert np.corrcoef(row, popularity)[0, 1] > 0.999999

    model = fit_closed_form(task, features, TrainConfig(), lam=1e9, weights={IDS: 1.0}).model
    rows = fit_rows(task, 50, 0)
    y = rows.targets
    h = task.source_histories(task.valid_users, 50)
    valid = bags(h.items, h.mask, task.n_items[task.source]).toarray()
    fit = rows.bags.toarray()
    # the ids block: histories' bags, root-n pooled (every source item here has content, so all are kept)
    prior = (valid / np.sqrt(valid.sum(1, keepdims=True))) @ (fit / np.sqrt(fit.sum(1, keepdims=True))).T @ y
    got = raw_scores(model, task, task.valid_users).numpy()
    np.testing.assert_allclose(got / np.linalg.norm(got, axis=1, keepdims=True),
                               prior / np.linalg.norm(prior, axis=1, keepdims=True), atol=1e-6)


def test_validation_switches_off_a_modality_that_only_adds_noise(world):
    task, features = world
    rng = np.random.default_rng(1)
    noisy = type(features)({p: {**v, "noise": torch.from_numpy(rng.standard_normal((len(v["text"]), 32)).astype(np.float32))}
                            for p, v in features.vectors.items()},
                           {p: {**v, "noise": torch.ones(len(v["text"]), dtype=torch.bool)}
                            for p, v in features.present.items()},
                           {**features.fingerprints, "noise": "1" * 16})
    result = fit_closed_form(task, noisy, TrainConfig())
    assert result.best.weights["noise"] == 0.0 and result.best.weights["text"] > 0
    assert any(t.weights["noise"] > 0 for t in result.trials)  # it was tried, and lost
    # switched off, it is out of the model: other noise gives the same scores
    again = type(noisy)(noisy.vectors | {task.source: {**noisy.vectors[task.source],
                                                      "noise": torch.randn(task.n_items[task.source], 32)}},
                        noisy.present, noisy.fingerprints)
    before = ModelScorer(result.model, task)(task.test_users)
    again.attach(result.model, task.platforms)
    assert torch.equal(ModelScorer(result.model, task)(task.test_users), before)


def test_a_step_validation_cannot_tell_from_noise_is_not_taken():
    rng = np.random.default_rng(0)
    best = Trial(30.0, {IDS: 1.0}, rng.uniform(0, 1, 400))
    noisy = Trial(30.0, {IDS: 4.0}, best.users + rng.normal(0.001, 0.1, 400))  # +0.001 mean, se 0.005
    assert noisy.valid_ndcg10 > best.valid_ndcg10 and not noisy.beats(best)
    assert Trial(30.0, {IDS: 0.0}, best.users + 0.002).beats(best)  # the same gain for every user
    assert not Trial(30.0, {IDS: 0.0}, best.users + 5e-5).beats(best)  # below MIN_GAIN


def test_the_closed_form_equals_ridge_trained_by_gradient(world):
    """The primal problem min_W |Z W - Y|^2 + lam |W|^2 over the scaled, weighted features,
    solved by gradient descent, scores validation users as the saved model does (full rank)."""
    task, features = world
    lam, weights = 10.0, {IDS: 1.0, "text": 0.5, CONST: 1.0}
    model = fit_closed_form(task, features, TrainConfig(), lam=lam, weights=weights).model
    rows = fit_rows(task, 50, 0)
    y = rows.targets
    feat = Featurizer(task, features, rows.bags)
    fit = feat.rows(rows.users, rows.bags)
    h = task.source_histories(task.valid_users, 50)
    valid = feat.rows(task.valid_users, bags(h.items, h.mask, task.n_items[task.source]))

    def design(part):  # [R, F]: each block times sqrt(w_b) s_b
        out = []
        for b, w in weights.items():
            z = fit.blocks[b]
            z2 = float((z.multiply(z).sum() if hasattr(z, "multiply") else (z * z).sum()) / z.shape[0])
            zb = part.blocks[b]
            zb = zb.toarray() if hasattr(zb, "toarray") else zb
            out.append(zb * np.sqrt(w / z2))
        return torch.from_numpy(np.concatenate(out, 1))

    zf, zv, target = design(fit), design(valid), torch.from_numpy(y.toarray())
    w = torch.zeros(zf.shape[1], target.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((zf @ w - target) ** 2).sum() + lam * (w ** 2).sum()
        loss.backward()
        return loss
    for _ in range(5):
        opt.step(closure)
    primal = (zv @ w).detach()
    np.testing.assert_allclose(raw_scores(model, task, task.valid_users).double().numpy(), primal.numpy(),
                               atol=2e-4 * float(primal.abs().max()))


def test_a_within_platform_fit_recalls_each_users_whole_set_from_all_but_one_fold():
    task, _ = synthetic_task(platforms=("a", "b"), source="a", target="a")
    rows_ = fit_rows(task, 50, 0)
    users, history, y = rows_.users, rows_.bags, rows_.targets
    mine = task.train[task.train["user_idx"].isin(users) & (task.train["platform"] == "a")]
    for u in np.unique(users)[:50]:
        items = set(mine.loc[mine["user_idx"] == u, "item_idx"])
        rows = np.flatnonzero(users == u)
        assert 1 < len(rows) <= 5
        left_out = []
        for r in rows:
            h = set(history[r].indices)
            assert set(y[r].indices) == items and h and h < items  # the targets: all, not just the left-out
            left_out.append(items - h)
        assert sum(map(len, left_out)) == len(set().union(*left_out))  # each item left out once at most


def test_what_only_the_transformer_does_is_refused_naming_the_setting(world, tmp_path):
    from multimodal_interest.training import train

    task, features = world
    own = type(features)(features.vectors, features.present, features.fingerprints)
    own.add_item_space(task.target, torch.randn(task.n_items[task.target], 8), "f" * 16)
    with pytest.raises(ValueError, match=r"score a platform's own item space, train the transformer "
                                         r"\(kind='transformer'\)"):
        train(task, own, TrainConfig(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("within", [False, True])
def test_a_fit_user_left_out_is_scored_as_by_a_fit_without_their_rows(within):
    """The search's leave-user-out scores (all of a user's rows at once: 5 within a platform)
    equal the scores of a kernel ridge refitted without those rows."""
    task, features = synthetic_task(n_users=150, platforms=("a", "b"), source="a", target="a" if within else "b")
    rows = fit_rows(task, 50, 0)
    feat = Featurizer(task, features, rows.bags)
    h = task.source_histories(task.valid_users, 50)
    fit, valid = feat.rows(rows.users, rows.bags), feat.rows(task.valid_users, bags(h.items, h.mask, task.n_items["a"]))
    scale = block_scales(fit)
    kff, kvf = cross_kernels(fit, fit, scale), cross_kernels(valid, fit, scale)
    n_t = task.n_items[task.target]
    truth = csr_of(task.target_truth(task.valid_users), n_t)
    validator = Validator(kff, kvf, rows, within, truth, None, seed=0, left_out_rows=len(rows) // 2)
    assert 0 < len(validator.rows) <= len(rows) // 2  # a sample of whole users
    lam, weights = 3.0, {b: 1.0 for b in kff}
    k = combine(kff, weights).astype(np.float64) + lam * np.eye(len(rows))
    g = np.linalg.inv(k)
    dense = rows.targets.toarray()
    gy, g_rows = g[validator.rows] @ dense, g[np.ix_(validator.rows, validator.rows)]
    groups = validator.groups[:12]
    assert (groups >= 0).sum(1).max() == (5 if within else 1)
    got = validator.left_out_scores(gy, g_rows, groups).numpy()
    for scores, group in zip(got, groups):
        mine = validator.rows[group[group >= 0]]
        assert len(set(rows.users[mine])) == 1
        assert set(np.flatnonzero(rows.users == rows.users[mine[0]])) == set(mine)  # the user's every row
        rest = np.setdiff1d(np.arange(len(rows)), mine)
        refit = k[np.ix_(mine, rest)] @ np.linalg.solve(k[np.ix_(rest, rest)], dense[rest])
        np.testing.assert_allclose(scores[:len(mine)], refit, atol=1e-8)
    valid_scores, left_out = validator(lam, weights)
    assert left_out.shape == (len(validator.groups),) and np.isfinite(left_out).all()
    expected = combine(kvf, weights).astype(np.float64) @ g @ dense
    np.testing.assert_allclose(valid_scores, ndcg10(torch.from_numpy(expected), truth), atol=1e-6, equal_nan=True)


def test_every_fit_row_is_used_beyond_the_exact_size_and_the_approximate_path_says_so(world):
    """More fit rows than ``exact_rows``: the search runs on a sample, the solve over every
    row through landmarks; the saved model says which path ran on how many users, and it
    scores nearly as well as the exact fit."""
    task, features = world
    exact = fit_closed_form(task, features, TrainConfig())
    approx = fit_closed_form(task, features, TrainConfig(exact_rows=150, landmarks=120))
    n = len(fit_rows(task, 50, 0))
    assert exact.info["path"] == "exact" and exact.info["fit_rows"] == n
    assert approx.info == approx.model.info["fit"]
    assert (approx.info["path"], approx.info["fit_rows"], approx.info["landmarks"]) == ("nystrom", n, 120)
    assert approx.info["search_rows"] <= 150
    assert approx.valid_ndcg10 > exact.valid_ndcg10 - 0.03


def test_top_ranks_are_the_full_ranks_within_k():
    from multimodal_interest.metrics import full_ranks, top_ranks

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40, 30), generator=g).float()  # many ties: the index rule decides
    truth = torch.randint(0, 30, (40, 5), generator=g)
    mask = torch.rand(40, 5, generator=g) > 0.3
    full = full_ranks(scores, truth, mask)
    want = torch.where(mask, full.clamp(max=11), 0)
    assert torch.equal(top_ranks(scores, truth, mask, 10), want)


def test_the_search_reports_its_optimism_from_the_halves_of_the_validation_users():
    from multimodal_interest.training.closed_form.search import halves

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)
    a, b = halves(200)
    lucky = base.copy()
    lucky[a] += 0.2  # a setting that is better on one half only: chosen there, no better on the other
    trials = [Trial(1.0, {IDS: 1.0}, base), Trial(3.0, {IDS: 1.0}, lucky)]
    report = optimism(trials)
    assert report["optimism"] == pytest.approx(0.1, abs=1e-9)  # one way round it gains 0.2, the other 0
    assert not Trial(3.0, {IDS: 1.0}, lucky).beats(trials[0])  # it does not hold on both halves


def test_with_no_shared_user_the_model_scores_by_what_items_are():
    """--overlap-fraction 0: no training user is on both platforms; the model still trains,
    from content and the target's own users, beats popularity, and scores as saved."""
    from multimodal_interest.data.protocols import unlink_users

    task, features = synthetic_task(one_encoder=True)
    alone = unlink_users(task, 0.0, seed=0)
    assert len(alone.overlap_users()) == 0
    result = fit_closed_form(alone, features, TrainConfig())
    assert result.info["path"] == "zero-shot" and result.model.info["fit"]["fit_rows"] == 0
    assert result.valid_ndcg10 == pytest.approx(result.best.valid_ndcg10, abs=1e-6)  # the model scores as chosen
    popular = next(t for t in result.trials if not any(v for b, v in t.weights.items() if b != "popularity"))
    assert result.valid_ndcg10 > popular.valid_ndcg10 + 0.05
    # an item the catalog gains later is scored as these are, by its content, with no popularity
    t, items = alone.target, torch.arange(alone.n_items[alone.target])
    new, has = result.model.content_head(t).item_vectors(len(items), None, features.vectors[t], features.present.get(t))
    learned = result.model.spaces[t].learned.detach()
    assert has.all() and torch.equal(new[:, -1], torch.zeros(len(items)))
    torch.testing.assert_close(new[:, :-1], learned[:, :-1], rtol=1e-5, atol=1e-6)


def test_with_few_linked_users_content_similarity_joins_the_fit_and_the_model_scores_as_chosen(tmp_path):
    """With 5% of the users linked the fit alone is noisy: the blend with the histories' content
    similarity (validation's choice) beats it, and the saved model, reloaded, scores as chosen."""
    from multimodal_interest.data.protocols import unlink_users

    task, features = synthetic_task(one_encoder=True)
    few = unlink_users(task, 0.05, seed=0)
    result = fit_closed_form(few, features, TrainConfig())
    assert result.info["blend"]["blend"] == "on", result.info["blend"]
    fit_alone = [t for t in result.trials if not t.path.startswith(("content blend", "zero-shot"))][-1]
    assert result.best.path.startswith("content blend") and result.best.beats(fit_alone)
    assert result.valid_ndcg10 == pytest.approx(result.best.valid_ndcg10, abs=1e-6)
    width = result.model.spaces[few.target].learned.shape[1]
    assert width > result.best.rank  # the content columns come after the fit's
    result.model.save_pretrained(tmp_path / "m")
    loaded = InterestModel.from_pretrained(tmp_path / "m", encoder_fingerprints=features.fingerprints)
    features.attach(loaded, few.platforms)
    users = few.test_users
    assert torch.equal(ModelScorer(loaded, few)(users), ModelScorer(result.model, few)(users))
    given = fit_closed_form(few, features, TrainConfig(), lam=result.best.lam,
                            weights={b: w for b, w in result.best.weights.items() if not b.startswith("blend")})
    assert "blend" not in given.info and given.model.spaces[few.target].learned.shape[1] == result.best.rank


def test_the_zero_shot_model_replaces_a_fit_of_few_linked_users_that_it_beats_on_validation(monkeypatch):
    """With 1% of the users linked (3 fit rows) and no content blend, the fit alone (about
    0.17 on validation) is far below the zero-shot model (what the items are, no linked user
    needed: about 0.47), which is the model saved. With 5% linked and the blend, the fit is
    level with it (the blend reads the same content), not beaten by a step, and stays. Either
    way the saved model scores as the chosen trial. (With the blend at 1% the two are within
    noise of each other, and which wins differed between two CPUs.)"""
    from multimodal_interest.data.protocols import unlink_users
    from multimodal_interest.training.closed_form import fit as fit_module

    task, features = synthetic_task(one_encoder=True)
    with_blend = fit_module.choose_blend
    for f, chosen in ((0.01, True), (0.05, False)):
        monkeypatch.setattr(fit_module, "choose_blend", with_blend if not chosen else
                            lambda *args: (None, args[-1], {"blend": "off", "why": "the test"}, []))
        few = unlink_users(task, f, seed=0)
        result = fit_closed_form(few, features, TrainConfig())
        zero = result.info["zero_shot"]
        assert zero["zero_shot"] == ("chosen" if chosen else "not chosen"), (f, zero)
        assert result.info["path"].startswith("zero-shot") == chosen
        assert (result.best.path == "zero-shot") == chosen
        assert result.valid_ndcg10 == pytest.approx(result.best.valid_ndcg10, abs=1e-6)
        if chosen:
            assert zero["valid_ndcg10"] > zero["fit_valid_ndcg10"] + 0.1  # far apart: no CPU flips it


def test_an_item_nobody_touched_is_scored_by_its_content(world):
    """Items with no training interaction get vectors from their content (the ridge map onto
    the learned vectors), chosen on the validation cold items: without it they score 0."""
    from multimodal_interest.data.protocols import make_items_cold
    from multimodal_interest.evaluate import ItemSlices

    task, features = world
    cold = make_items_cold(task, 0.5, seed=0)
    result = fit_closed_form(cold, features, TrainConfig())
    assert result.info["content"]["content"] == "on", result.info["content"]
    learned = result.model.spaces[cold.target].learned
    assert learned[cold.test_cold_items].abs().sum(1).min() > 0  # every cold item has a vector
    # the model's content head gives an item added after training what an untouched one got
    head, t, idx = result.model.content_head(cold.target), cold.target, torch.from_numpy(cold.cold_items)
    assert result.info["content"]["head"]["map"] == {**{k: result.info["content"][k] for k in ("blocks", "mu", "rho")},
                                                     "rho_from": "validation"}
    new, has = head.item_vectors(len(idx), None, {m: x[idx] for m, x in features.vectors[t].items()},
                                 {m: x[idx] for m, x in features.present.get(t, {}).items()})
    assert has.all()
    torch.testing.assert_close(new, learned[idx].detach(), rtol=1e-5, atol=1e-6)
    slices = ItemSlices.for_test(cold)
    with_content = evaluate(ModelScorer(result.model, cold), cold, cold.test_users, ks=(10,), slices=slices)
    with torch.no_grad():
        learned[cold.cold_items] = 0.0  # what an untouched item had before: nothing
    without = evaluate(ModelScorer(result.model, cold), cold, cold.test_users, ks=(10,), slices=slices)
    got, before = (np.nanmean(r.slices["cold"].values["ndcg@10"]) for r in (with_content, without))
    assert got > before + 0.05


def test_users_on_one_platform_only_shape_the_items_of_their_platform():
    """Unlinked users (on one platform only) teach nothing about the mapping, but their items'
    co-occurrence reaches the fit: source items held only by source-only users get a
    co-occurrence row (so a history holding them is not empty), target items held only by
    target-only users a smoothing row."""
    from multimodal_interest.data.protocols import unlink_users
    from multimodal_interest.training.closed_form.cooc import cooc_basis

    task, features = synthetic_task()
    alone = unlink_users(task, 0.2, seed=0)
    rows = fit_rows(alone, 50, 0)
    feat = Featurizer(alone, features, rows.bags)
    train = alone.train
    linked = set(rows.users.tolist())
    for platform, basis in ((alone.source, feat.cooc), (alone.target, cooc_basis(alone, alone.target))):
        on = train[train["platform"] == platform]
        by_linked = set(on.loc[on["user_idx"].isin(linked), "item_idx"])
        only_alone = sorted(set(on["item_idx"]) - by_linked)
        assert only_alone, "the world has items only single-platform users hold"
        assert (np.abs(basis[only_alone]).sum(1) > 0).all()
    assert feat.table_present[sorted(set(train.loc[train["platform"] == alone.source, "item_idx"]))].all()


TWO_PROCESS_FIT = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, {tests!r})
    from accelerate import PartialState
    from synthetic import synthetic_task
    import multimodal_interest.training.closed_form.fit as closed_form_fit
    from multimodal_interest.training import TrainConfig, train
    from multimodal_interest.training.scoring import ModelScorer
    torch.set_num_threads(1)
    closed_form_fit.CHUNK_ROWS = 64  # 8 chunks of the 480 fit rows: each process sums its share
    task, features = synthetic_task(n_users=600, latent=4)
    result = train(task, features, TrainConfig(exact_rows=200, landmarks=150), sys.argv[1], progress_bar=False)
    state = PartialState()
    # a file each, not stdout: two processes' lines written at once can interleave
    with open(f"{{sys.argv[1]}}-process-{{state.process_index}}.json", "w") as f:
        json.dump({{"process": state.process_index, "processes": state.num_processes,
                   "valid_ndcg10": result.best_valid_ndcg10, "fit": result.history[-1]["fit"]}}, f)
    if state.is_main_process:
        torch.save(ModelScorer(result.model, task)(task.test_users), sys.argv[1] + "/test-scores.pt")
""")


def test_two_processes_share_the_approximate_solve_and_fit_what_one_does(tmp_path):
    """Launched in two processes, each sums half of the approximate solve's row chunks and the
    sums are all-reduced: both processes fit the one-process model (validation NDCG@10 and
    test scores equal up to float error), and the main process writes the run folder."""
    script = tmp_path / "fit.py"
    script.write_text(TWO_PROCESS_FIT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, check=True,
                   capture_output=True, text=True, timeout=600)
    accelerate_launch(str(script), str(tmp_path / "two"))
    (alone,) = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("one-process-*.json"))]
    launched = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("two-process-*.json"))]
    assert alone["processes"] == 1 and [r["process"] for r in launched] == [0, 1]
    assert alone["fit"]["path"] == "nystrom" and all(r["fit"] == alone["fit"] for r in launched)
    for r in launched:
        assert r["valid_ndcg10"] == pytest.approx(alone["valid_ndcg10"], abs=1e-4)
    a, b = (torch.load(tmp_path / run / "test-scores.pt", weights_only=True) for run in ("one", "two"))
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    assert Run(tmp_path / "two").log()[-1]["fit"] == alone["fit"]


def test_the_demo_fits_afresh_over_its_own_closed_form_run_fitted_otherwise(world, tmp_path):
    """A closed-form run keeps no checkpoint, only its settings: the demo's own folder, fitted
    with other settings (an older version's defaults), is fitted again, not refused."""
    from multimodal_interest.commands.demo import _drop_stale_run
    from multimodal_interest.training import train

    task, features = world
    run = tmp_path / "run"
    config = TrainConfig(exact_rows=200, landmarks=150)
    train(task, features, config, run, progress_bar=False)
    said = []
    _drop_stale_run(run, task, features, config, said.append)
    assert (run / "config.json").is_file() and not said  # same settings: kept
    other = TrainConfig(exact_rows=300, landmarks=150)
    with pytest.raises(ValueError, match="holds a run with other settings"):
        train(task, features, other, run, progress_bar=False)
    _drop_stale_run(run, task, features, other, said.append)
    assert not run.exists() and "training afresh" in said[0]
    train(task, features, other, run, progress_bar=False)
