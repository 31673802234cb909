"""The fusion model: masking, empty histories, scoring forms, save/load, errors, learning."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusion import (Adapter, FusionConfig, FusionTransformer, InterestConfig, InterestModel, TargetConfig,
                    get_adapter_class, list_adapters, register_adapter)

TEXT, IMAGE, N_ART, N_OFFICE, N_EXT = 24, 16, 60, 40, 30



def make_model(targets: dict[str, TargetConfig] | None = None, pooling: str = "attention",
               perturb: bool = True, **fusion_kw) -> InterestModel:
    """Art (text + image, some images missing, item 5 with nothing) -> office (text + ids)."""
    torch.manual_seed(0)
    fusion = dict(kind="transformer", modalities={"text": TEXT, "image": IMAGE}, platforms=["art", "office"],
                  id_items={"office": N_OFFICE}, dim=32, n_layers=2, n_heads=4, max_len=8,
                  n_experts=2, pooling=pooling)
    fusion.update(fusion_kw)
    targets = targets or {"office": TargetConfig(N_OFFICE, adapter="lowrank", item_adapter="linear")}
    model = InterestModel(InterestConfig(FusionConfig(**fusion), targets), {"text": "aaaa", "image": "bbbb"})
    if perturb:  # leave the initialisation (identity adapters, zero biases) behind
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    set_features(model)
    return model


def set_features(model: InterestModel | FusionTransformer) -> None:
    g = torch.Generator().manual_seed(1)
    has_image = torch.rand(N_ART, generator=g) > 0.3
    has_text = torch.ones(N_ART, dtype=torch.bool)
    has_text[5] = has_image[5] = False
    image = torch.randn(N_ART, IMAGE, generator=g)
    image[~has_image] = float("nan")  # absent rows may hold anything
    model.set_item_features("art", {"text": torch.randn(N_ART, TEXT, generator=g), "image": image},
                            present={"text": has_text, "image": has_image})
    model.set_item_features("office", {"text": torch.randn(N_OFFICE, TEXT, generator=g)})


def histories(B: int = 6, L: int = 9, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(0, N_ART, (B, L), generator=g)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    mask = torch.arange(L)[None, :] < lengths[:, None]
    return items, mask


def test_fusion_is_a_pure_torch_library():
    code = ("import sys, fusion; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('multimodal_interest', 'accelerate', 'encoders')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# ---------------------------------------------------------------------------- masking
@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_padding_does_not_change_the_interest_vector(pooling):
    model = make_model(pooling=pooling).eval()
    items, mask = histories(B=6, L=12)  # longer than max_len=8: old items share a position
    with torch.no_grad():
        padded = model.encode_users(items, mask, "art")
        alone = torch.cat([model.encode_users(items[b:b + 1, mask[b]], mask[b:b + 1, mask[b]], "art")
                           for b in range(len(items))])
        # left-padded, with garbage item ids in the padding, and extra padding columns
        L = items.shape[1] + 3
        left_items = torch.full((len(items), L), 10_000)
        left_mask = torch.zeros(len(items), L, dtype=torch.bool)
        for b in range(len(items)):
            n = int(mask[b].sum())
            left_items[b, L - n:], left_mask[b, L - n:] = items[b, :n], True
        left = model.encode_users(left_items, left_mask, "art")
    assert torch.allclose(padded, alone, atol=1e-6, rtol=0)
    assert torch.allclose(left, alone, atol=1e-6, rtol=0)
    assert torch.allclose(padded.norm(dim=1), torch.ones(len(items)))


def test_missing_modality_is_left_out_not_zero_filled():
    model = make_model().eval()
    emb = model.fusion.items
    table = emb.tables["art"]
    idx = torch.arange(N_ART)
    with torch.no_grad():
        got, has = emb("art", idx)
        text = emb.proj["text"](table.x("text"))
        image = emb.proj["image"](table.x("image"))
        zero_image = emb.proj["image"](torch.zeros(1, IMAGE))
    assert zero_image.abs().max() > 1e-3  # so zero-filling would show
    both, text_only = table.has("image") & table.has("text"), ~table.has("image") & table.has("text")
    assert both.sum() > 10 and text_only.sum() > 5
    assert torch.allclose(got[both], text[both] + image[both], atol=1e-6)
    assert torch.allclose(got[text_only], text[text_only], atol=1e-6)
    assert not has[5] and torch.equal(got[5], torch.zeros(32))
    assert torch.isfinite(got).all()  # NaN in absent rows never leaks


def test_item_with_no_modality_is_dropped_from_the_history():
    model = make_model().eval()
    with torch.no_grad():
        with_it = model.encode_users(torch.tensor([[3, 5, 7]]), torch.ones(1, 3, dtype=torch.bool), "art")
        without = model.encode_users(torch.tensor([[3, 7]]), torch.ones(1, 2, dtype=torch.bool), "art")
        reordered = model.encode_users(torch.tensor([[7, 3]]), torch.ones(1, 2, dtype=torch.bool), "art")
    assert torch.allclose(with_it, without, atol=1e-6)
    assert not torch.allclose(without, reordered, atol=1e-3)  # positions matter


def test_empty_history_gives_zero_vector_and_bias_scores():
    model = make_model()
    items, mask = histories(B=4)
    mask[1] = False
    mask[2] = False
    items[2, :3], mask[2, :3] = 5, True  # only an item with nothing to embed
    u = model.encode_users(items, mask, "art")
    assert torch.isfinite(u).all()
    assert torch.equal(u[1], torch.zeros(32)) and torch.equal(u[2], torch.zeros(32))
    assert torch.allclose(u[[0, 3]].norm(dim=1), torch.ones(2))
    scores = model.logits(u, "office")
    assert torch.equal(scores[1].detach(), model.spaces["office"].bias.detach())  # the prior alone
    scores.sum().backward()  # training on such a row stays finite
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    none = model.encode_users(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.bool), "art")
    assert torch.equal(none, torch.zeros(3, 32))


def test_modality_dropout_only_in_training():
    model = make_model(modality_dropout=0.5)
    emb, table = model.fusion.items, model.fusion.items.tables["art"]
    both = (table.has("image") & table.has("text")).nonzero().squeeze(1)
    idx = both.repeat(20)
    with torch.no_grad():
        text, image = emb.proj["text"](table.x("text")[idx]), emb.proj["image"](table.x("image")[idx])
        model.train()
        got, _ = emb("art", idx, modality_dropout=0.5)
        model.eval()
        full, _ = emb("art", idx, modality_dropout=0.5)
    is_text = torch.isclose(got, text, atol=1e-6).all(1)
    is_image = torch.isclose(got, image, atol=1e-6).all(1)
    is_both = torch.isclose(got, text + image, atol=1e-6).all(1)
    assert (is_text | is_image | is_both).all()  # never both dropped
    assert is_text.sum() > 0 and is_image.sum() > 0 and is_both.sum() > 0
    assert torch.allclose(full, text + image, atol=1e-6)


def test_mixed_platform_histories():
    model = make_model().eval()
    items, mask = histories(B=4)
    with torch.no_grad():
        by_name = model.encode_users(items, mask, "art")
        by_index = model.encode_users(items, mask, torch.zeros_like(items))
        office = torch.ones_like(items) * (torch.arange(items.shape[1]) % 2 == 1)  # every other
        mixed = model.encode_users(items % N_OFFICE, mask, office)
    assert torch.allclose(by_name, by_index, atol=1e-6)
    assert torch.isfinite(mixed).all() and torch.allclose(mixed.norm(dim=1), torch.ones(4))
    model.set_item_features("office", {"text": torch.randn(N_OFFICE, TEXT)})  # office tokens read these
    with torch.no_grad():
        assert not torch.allclose(model.encode_users(items % N_OFFICE, mask, office), mixed, atol=1e-3)
        assert torch.equal(model.encode_users(items, mask, "art"), by_name)


@pytest.mark.parametrize("kind", ["transformer", "linear"])
def test_leave_one_out_is_each_history_encoded_without_each_item(kind):
    """What explanations compare against: row [b, j] = the interest of history b with item j
    masked out, 0 on padding; mixed platforms, items with nothing to embed, and a history
    left empty (the linear model's: its constant, exactly) included."""
    model = make_model(kind=kind, n_experts=1).eval() if kind == "linear" else make_model().eval()
    items, mask = histories(B=5)
    items[0, 1] = 5  # an item with nothing to embed
    mask[1] = False
    mask[1, 0] = True  # a history of one item: without it, nothing is left
    office = (torch.arange(items.shape[1]) % 3 == 2).long().expand_as(items)  # every third item of office
    items = torch.where(office == 1, items % N_OFFICE, items)
    with torch.no_grad():
        for platform in ("art", office):
            got = model.leave_one_out(items, mask, platform)
            assert got.shape == (*items.shape, 32)
            for b in range(items.shape[0]):
                for j in range(items.shape[1]):
                    if not mask[b, j]:
                        assert torch.equal(got[b, j], torch.zeros(32))
                        continue
                    left = mask[b:b + 1].clone()
                    left[0, j] = False
                    p = platform if isinstance(platform, str) else platform[b:b + 1]
                    want = model.encode_users(items[b:b + 1], left, p)[0]
                    assert torch.allclose(got[b, j], want, atol=1e-5), (b, j)
            assert torch.equal(got[1, 0], model.encode_users(items[1:2], torch.zeros_like(mask[1:2]), platform
                                                             if isinstance(platform, str) else platform[1:2])[0])


# ---------------------------------------------------------------------------- scoring forms
def test_logits_forms_agree():
    model = make_model().eval()
    items, mask = histories(B=5)
    with torch.no_grad():
        u = model.encode_users(items, mask, "art")
        full = model.logits(u, "office")
        cached = model.logits(u, "office", item_vectors=model.item_vectors("office"))
        shared = torch.tensor([3, 0, 39, 3])
        per_user = torch.randint(0, N_OFFICE, (5, 7))
        assert full.shape == (5, N_OFFICE)
        assert torch.allclose(model.score(items, mask, "art", "office"), full)
        assert torch.allclose(cached, full, atol=1e-6)
        assert torch.allclose(model.logits(u, "office", shared), full[:, shared], atol=1e-5)
        assert torch.allclose(model.logits(u, "office", per_user), full.gather(1, per_user), atol=1e-5)
        assert torch.allclose(model(items, mask, "art", "office", shared), full[:, shared], atol=1e-5)
    v = model.item_vectors("office")
    assert v.shape == (N_OFFICE, 32) and torch.allclose(v.norm(dim=1), torch.ones(N_OFFICE))


def test_new_platform_scored_zero_shot_from_its_catalog():
    model = make_model().eval()
    model.add_target("music", TargetConfig(25, adapter="identity", item_bias=False))
    model.set_item_features("music", {"image": torch.randn(25, IMAGE)})
    items, mask = histories(B=3)
    with torch.no_grad():
        u = model.encode_users(items, mask, "art")
        scores = model.score(items, mask, "art", "music")
        proj = model.fusion.items.proj["image"](model.fusion.items.tables["music"].x("image"))
    expected = model.spaces["music"].scale * u @ torch.nn.functional.normalize(proj, dim=1).T
    assert torch.allclose(scores, expected, atol=1e-5)


# ---------------------------------------------------------------------------- save and load
def target_for(adapter: str, space: str) -> TargetConfig:
    if space == "content":
        return TargetConfig(N_OFFICE, adapter=adapter, item_adapter=adapter)
    same = get_adapter_class(adapter).same_dim
    return TargetConfig(N_EXT, space="external", external_dim=32 if same else 12, adapter=adapter,
                        learn_temperature=False, temperature=0.1)


@pytest.mark.parametrize("space", ["content", "external"])
@pytest.mark.parametrize("adapter", list_adapters())
def test_save_load_gives_identical_scores(adapter, space, tmp_path):
    target = "office" if space == "content" else "ext"
    model = make_model({target: target_for(adapter, space)}).eval()
    if space == "external":
        dim = model.spaces["ext"].config.external_dim
        model.set_item_vectors("ext", torch.randn(N_EXT, dim))
    items, mask = histories()
    model.save_pretrained(tmp_path / "m")
    loaded = InterestModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    set_features(loaded)
    if space == "external":
        loaded.set_item_vectors("ext", model.spaces["ext"].vectors)
    with torch.no_grad():
        want, got = model.score(items, mask, "art", target), loaded.score(items, mask, "art", target)
    assert torch.isfinite(want).all() and want.shape == (len(items), model.spaces[target].config.n_items)
    assert torch.equal(got, want)


def test_manifest_and_files(tmp_path):
    model = make_model({"office": TargetConfig(N_OFFICE, adapter="lowrank", adapter_kwargs={"rank": 4}),
                        "ext": TargetConfig(N_EXT, space="external", external_dim=12, adapter="mlp")})
    model.save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "multimodal-interest/interest-model"
    assert manifest["encoder_fingerprints"] == {"text": "aaaa", "image": "bbbb"}
    assert manifest["versions"]["torch"] == torch.__version__
    parts = {p["name"]: (p["type"], p["path"]) for p in manifest["parts"]}
    assert parts == {"fusion": ("FusionTransformer", "fusion"),
                     "targets/office": ("ItemSpace", "targets/office"),
                     "adapters/office": ("lowrank", "adapters/office"),
                     "item_adapters/office": ("identity", "item_adapters/office"),
                     "targets/ext": ("ItemSpace", "targets/ext"),
                     "adapters/ext": ("mlp", "adapters/ext")}
    for _, path in parts.values():
        assert {f.name for f in (tmp_path / path).iterdir()} == {"config.json", "model.safetensors"}
    assert json.loads((tmp_path / "adapters/office/config.json").read_text()) == {
        "type": "lowrank", "in_dim": 32, "out_dim": 32, "rank": 4}
    saved = json.loads((tmp_path / "fusion/config.json").read_text())
    assert FusionConfig.from_dict(saved) == model.fusion.config
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    # feature tables are data from the store, not weights
    from safetensors.torch import load_file
    assert not any("tables" in k for k in load_file(str(tmp_path / "fusion/model.safetensors")))


def test_fusion_transformer_saves_and_loads_alone(tmp_path):
    model = make_model().eval()
    model.fusion.save(tmp_path)
    fusion = FusionTransformer.load(tmp_path).eval()
    set_features(fusion)
    items, mask = histories()
    with torch.no_grad():
        assert torch.equal(fusion(items, mask, "art"), model.fusion(items, mask, "art"))


def test_load_refuses_other_encoders(tmp_path):
    make_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"fingerprints differ \(text: model aaaa, given cccc\)"):
        InterestModel.from_pretrained(tmp_path, encoder_fingerprints={"text": "cccc", "image": "bbbb"})
    loaded = InterestModel.from_pretrained(tmp_path, encoder_fingerprints={"text": "aaaa", "audio": "x"})
    assert loaded.encoder_fingerprints == {"text": "aaaa", "image": "bbbb"}


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json: missing"):
        InterestModel.from_pretrained(tmp_path)
    make_model().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "fusion/config.json").read_text())
    cfg["n_layer"] = 3
    (tmp_path / "fusion/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"fusion/config.json: sha256 .* but the model's manifest records"):
        InterestModel.from_pretrained(tmp_path)  # an edit is refused before the file is read
    rehash(tmp_path)  # as if the manifest had been written after the edit: the config is read
    with pytest.raises(ValueError, match=r"fusion/config.json: .*unknown key\(s\) n_layer"):
        InterestModel.from_pretrained(tmp_path)


def rehash(folder: Path) -> None:
    """Record the files' current sha256 in the model's manifest (what a tamperer who also
    edits the manifest does), so the checks behind the hash check can be tested."""
    from fusion.files import sha256_file

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = {f: sha256_file(folder / f) for f in manifest["sha256"]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_every_saved_file_is_hashed_and_a_changed_one_is_refused(tmp_path):
    make_model().save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest["sha256"]) == sorted(f.relative_to(tmp_path).as_posix() for f in tmp_path.rglob("*")
                                                if f.is_file() and f.name != "manifest.json")
    weights = tmp_path / "targets/office/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"targets/office/model.safetensors: sha256 \w+ but the model's "
                                         r"manifest records \w+: the file changed"):
        InterestModel.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="targets/office/model.safetensors: missing"):
        InterestModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("part, tensor, value", [("fusion", "blocks.0.attn.qkv.weight", float("inf")),
                                                 ("targets/office", "bias", float("nan")),
                                                 ("adapters/office", None, -float("inf"))])
def test_a_non_finite_weight_is_refused_naming_file_and_tensor(tmp_path, part, tensor, value):
    from safetensors.torch import load_file, save_file

    make_model().save_pretrained(tmp_path)
    path = tmp_path / part / "model.safetensors"
    state = load_file(path)
    tensor = tensor if tensor in state else next(k for k, v in state.items() if v.is_floating_point())
    state[tensor].view(-1)[0] = value
    save_file(state, path)  # a valid file, and a valid manifest: only the value is wrong
    rehash(tmp_path)
    with pytest.raises(ValueError, match=rf"{part}/model.safetensors: tensor '{re.escape(tensor)}' has 1 "
                                         rf"non-finite value"):
        InterestModel.from_pretrained(tmp_path)


def test_a_model_saved_without_hashes_loads_with_a_warning(tmp_path):
    model = make_model().eval()
    model.save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["sha256"]  # as the code before the hashes wrote it
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="records no file hashes .* loaded unverified"):
        loaded = InterestModel.from_pretrained(tmp_path).eval()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_a_manifest_path_out_of_the_folder_is_refused(tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    manifest = json.loads((tmp_path / "m/manifest.json").read_text())
    manifest["sha256"]["../elsewhere.json"] = "0" * 64
    (tmp_path / "m/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"path '../elsewhere.json' leads out of the model folder"):
        InterestModel.from_pretrained(tmp_path / "m")



class GatedAdapter(Adapter):
    """A custom adapter type (not one of the package's): ``x * sigmoid(g)``, one gate per width."""

    config_keys = ("in_dim", "out_dim", "bias")
    same_dim = True

    def __init__(self, in_dim: int, out_dim: int, bias: float = 0.5):
        super().__init__(in_dim, out_dim)
        self.bias = bias
        self.gate = torch.nn.Parameter(torch.full((in_dim,), bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate)


def test_each_part_loads_as_the_type_its_manifest_records(tmp_path, monkeypatch):
    import fusion.adapters

    monkeypatch.setattr(fusion.adapters, "_ADAPTERS", dict(fusion.adapters._ADAPTERS))
    register_adapter("test-gated")(GatedAdapter)
    model = make_model({"office": TargetConfig(N_OFFICE, adapter="test-gated", adapter_kwargs={"bias": 1.5},
                                               item_adapter="mlp")}).eval()
    model.save_pretrained(tmp_path)
    parts = {p["name"]: p["type"] for p in json.loads((tmp_path / "manifest.json").read_text())["parts"]}
    assert parts["adapters/office"] == "test-gated"
    loaded = InterestModel.from_pretrained(tmp_path).eval()
    assert type(loaded.adapters["office"]) is GatedAdapter and loaded.adapters["office"].bias == 1.5
    assert type(loaded.item_adapters["office"]) is get_adapter_class("mlp")
    set_features(loaded)
    items, mask = histories()
    with torch.no_grad():
        assert torch.equal(loaded.score(items, mask, "art", "office"), model.score(items, mask, "art", "office"))


def test_an_unknown_part_type_is_refused_naming_the_file_and_the_known_types(tmp_path):
    make_model().save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    next(p for p in manifest["parts"] if p["name"] == "adapters/office")["type"] = "unheard-of"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"manifest.json: part 'adapters/office' has type 'unheard-of'.*"
                                         r"known adapter types: identity, linear, lowrank, mlp, moe"):
        InterestModel.from_pretrained(tmp_path)
    next(p for p in manifest["parts"] if p["name"] == "adapters/office")["type"] = "lowrank"
    next(p for p in manifest["parts"] if p["name"] == "fusion")["type"] = "GRU4Rec"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"part 'fusion' has type 'GRU4Rec'.*known fusion types: LinearFusion, FusionTransformer"):
        InterestModel.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- bad input
def test_config_typos_are_errors():
    good = {"modalities": {"text": 384}, "platforms": ["a"]}
    assert FusionConfig.from_dict(good).dim == 1024 and FusionConfig.from_dict({**good, "kind": "transformer"}).dim == 128
    with pytest.raises(ValueError, match=r"unknown key\(s\) n_layer; valid keys: modalities"):
        FusionConfig.from_dict({**good, "n_layer": 3})
    with pytest.raises(ValueError, match=r"missing required key\(s\) platforms"):
        FusionConfig.from_dict({"modalities": {"text": 384}})
    with pytest.raises(ValueError, match=r"targets.b: unknown key\(s\) adaptor"):
        InterestConfig.from_dict({"fusion": good, "targets": {"b": {"n_items": 3, "adaptor": "mlp"}}})
    with pytest.raises(ValueError, match="external_dim is required"):
        TargetConfig(3, space="external")
    with pytest.raises(ValueError, match="platform name 'a.b' is not allowed"):
        FusionConfig({"text": 4}, ["a.b"])
    cfg = InterestConfig(FusionConfig.from_dict(good), {"b": TargetConfig(3)})
    assert InterestConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_unknown_platforms_are_errors():
    model = make_model()
    items, mask = histories()
    u = model.encode_users(items, mask, "art")
    with pytest.raises(ValueError, match=r"no target head for platform 'music'; the model has \['office'\]"):
        model.logits(u, "music")
    with pytest.raises(ValueError, match="platform 'music' has no platform embedding"):
        model.encode_users(items, mask, "music")
    model.add_target("music", TargetConfig(25))
    with pytest.raises(ValueError, match=r"no item features registered for platform 'music'"):
        model.item_vectors("music")
    with pytest.raises(ValueError, match=r"platform indices must be in \[0, 2\)"):
        model.encode_users(items, mask, torch.full_like(items, 2))


def test_bad_features_are_errors():
    model = make_model()
    with pytest.raises(ValueError, match=r"features\['text'\]: vectors have width 384, the model expects 24"):
        model.set_item_features("art", {"text": torch.randn(N_ART, 384)})
    with pytest.raises(ValueError, match=r"platform 'office': target has 40 items but features have rows \{'text': 41\}"):
        model.set_item_features("office", {"text": torch.randn(41, TEXT)})
    with pytest.raises(ValueError, match=r"features\['text'\]: 41 rows, the platform has 40 items"):
        model.fusion.set_item_features("office", {"text": torch.randn(41, TEXT)})  # its id table
    bad = torch.randn(N_ART, TEXT)
    bad[17, 3], bad[30, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"features\['text'\]: 2 item\(s\) have NaN .*first: row 17"):
        model.set_item_features("art", {"text": bad})
    present = torch.ones(N_ART, dtype=torch.bool)
    present[[17, 30]] = False
    model.set_item_features("art", {"text": bad}, present={"text": present})  # absent: fine
    with pytest.raises(ValueError, match=r"unknown modality \['audio'\]"):
        model.set_item_features("art", {"audio": torch.randn(N_ART, 8)})
    with pytest.raises(ValueError, match=r"present\['text'\]: expected a bool vector \[60\]"):
        model.set_item_features("art", {"text": bad}, present={"text": present.float()})
    with pytest.raises(ValueError, match=r"item index out of range \[0, 60\): min 0, max 60"):
        model.encode_users(torch.tensor([[0, 60]]), torch.ones(1, 2, dtype=torch.bool), "art")


def test_bad_external_vectors_are_errors():
    model = make_model({"ext": TargetConfig(N_EXT, space="external", external_dim=12)})
    with pytest.raises(ValueError, match="no item vectors for platform 'ext'"):
        model.item_vectors("ext")
    with pytest.raises(ValueError, match="vectors have width 32, the model expects 12"):
        model.set_item_vectors("ext", torch.randn(N_EXT, 32))
    nan = torch.randn(N_EXT, 12)
    nan[4] = float("nan")
    with pytest.raises(ValueError, match="1 item.*NaN.*row 4"):
        model.set_item_vectors("ext", nan)
    model.add_target("office", TargetConfig(N_OFFICE))
    with pytest.raises(ValueError, match="has a content space"):
        model.set_item_vectors("office", torch.randn(N_OFFICE, 32))
    with pytest.raises(ValueError, match="cannot map width 32 to 12"):
        model.add_target("ext", TargetConfig(N_EXT, space="external", external_dim=12, adapter="lowrank"))


# ---------------------------------------------------------------------------- learning
def test_id_only_platforms_learn():
    """Amazon id-only pairs: no content, the id embedding alone embeds items."""
    torch.manual_seed(0)
    cfg = InterestConfig(FusionConfig({}, ["game", "video"], id_items={"game": 50, "video": 30},
                                      kind="transformer", dim=16, n_layers=1, n_heads=2, dropout=0.0, pooling="attention"),
                         {"video": TargetConfig(30)})
    model = InterestModel(cfg)
    items = torch.randint(0, 50, (64, 6))
    target = items[:, -1] % 30  # the next video is a function of the last game
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(items, torch.ones_like(items, dtype=torch.bool),
                                                       "game", "video"), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_overfits_a_task_with_real_signal():
    """The target item is a fixed linear map of the user's mean history text: 200 Adam steps
    must find it for most users, and every parameter must have moved (gradients reach the
    projections, transformer, pooling, adapters, id embeddings, bias and temperature)."""
    torch.manual_seed(0)
    n_src, n_tgt, n_users = 120, 40, 256
    src_text, src_image = torch.randn(n_src, 16), torch.randn(n_src, 8)
    has_image = torch.rand(n_src) > 0.25
    tgt_text = torch.randn(n_tgt, 16)
    items = torch.randint(0, n_src, (n_users, 10))
    mask = torch.arange(10)[None, :] < torch.randint(4, 11, (n_users, 1))
    mean_text = (src_text[items] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    target = (mean_text @ torch.randn(16, 16) @ tgt_text.T).argmax(1)
    assert target.unique().numel() > 20

    cfg = InterestConfig(
        FusionConfig({"text": 16, "image": 8}, ["src", "tgt"], id_items={"src": n_src, "tgt": n_tgt},
                     kind="transformer", dim=32, n_layers=2, n_heads=2, dropout=0.0, modality_dropout=0.0, n_experts=2,
                     pooling="attention"),
        {"tgt": TargetConfig(n_tgt, adapter="mlp", adapter_kwargs={"hidden": 64}, item_adapter="linear")})
    model = InterestModel(cfg)
    model.set_item_features("src", {"text": src_text, "image": src_image}, present={"image": has_image})
    model.set_item_features("tgt", {"text": tgt_text})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(model(items, mask, "src", "tgt"), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        top1 = model.score(items, mask, "src", "tgt").argmax(1)
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    assert (top1 == target).float().mean() > 0.8
    unmoved = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unmoved == []
