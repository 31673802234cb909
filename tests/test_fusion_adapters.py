"""Adapter heads, built off the registry: every registered adapter is checked the same way."""
from __future__ import annotations

import json

import pytest
import torch

import fusion.adapters
from fusion import Adapter, create_adapter, get_adapter_class, list_adapters, register_adapter


def square_and_not(name: str) -> list[tuple[int, int]]:
    return [(32, 32)] if get_adapter_class(name).same_dim else [(32, 32), (32, 12)]


CASES = [(name, i, o) for name in list_adapters() for i, o in square_and_not(name)]


def test_builtin_adapters_are_registered():
    assert set(list_adapters()) >= {"identity", "linear", "lowrank", "mlp", "moe"}
    assert list_adapters("l*") == ["linear", "lowrank"]


@pytest.mark.parametrize("name,in_dim,out_dim", CASES)
def test_shapes_and_finite(name, in_dim, out_dim):
    adapter = create_adapter(name, in_dim=in_dim, out_dim=out_dim)
    for shape in [(5, in_dim), (3, 4, in_dim)]:
        y = adapter(torch.randn(shape))
        assert y.shape == shape[:-1] + (out_dim,)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name,in_dim,out_dim", CASES)
def test_save_load_round_trip(name, in_dim, out_dim, tmp_path):
    torch.manual_seed(0)
    adapter = create_adapter(name, in_dim=in_dim, out_dim=out_dim)
    with torch.no_grad():  # move away from the initialisation, so loading must restore weights
        for p in adapter.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    adapter.save(tmp_path / name)
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["type"] == name and config["in_dim"] == in_dim and config["out_dim"] == out_dim
    loaded = Adapter.load(tmp_path / name)
    assert type(loaded) is type(adapter) and loaded.get_config() == adapter.get_config()
    x = torch.randn(7, in_dim)
    assert torch.equal(loaded(x), adapter(x))


@pytest.mark.parametrize("name", list_adapters())
def test_square_adapters_start_at_identity(name):
    """An untrained head keeps the shared space (the zero-shot path works from step 0)."""
    torch.manual_seed(0)
    x = torch.randn(6, 32)
    y = create_adapter(name, in_dim=32, out_dim=32)(x)
    tol = 0.5 if name == "moe" else 0.0  # moe experts are identity plus small noise
    assert (y - x).abs().max() <= tol
    assert torch.nn.functional.cosine_similarity(x, y).min() > 0.9


@pytest.mark.parametrize("name", [n for n in list_adapters() if get_adapter_class(n).same_dim])
def test_same_dim_adapter_refuses_other_width(name):
    with pytest.raises(ValueError, match="onto itself"):
        create_adapter(name, in_dim=32, out_dim=16)


def test_create_adapter_errors():
    with pytest.raises(ValueError, match="unknown adapter 'lora'.*registered: identity"):
        create_adapter("lora", in_dim=4, out_dim=4)
    with pytest.raises(TypeError, match="unknown: rnak"):
        create_adapter("lowrank", in_dim=4, out_dim=4, rnak=2)
    assert create_adapter("lowrank", in_dim=4, out_dim=4, rank=None).rank == 16  # None is dropped


def test_moe_gate_mixes_experts_and_learns():
    torch.manual_seed(0)
    moe = create_adapter("moe", in_dim=8, out_dim=3, n_experts=3)
    x = torch.randn(16, 8)
    experts = torch.einsum("ni,eio->neo", x, moe.weight)
    assert torch.allclose(moe(x), experts.mean(1), atol=1e-6)  # the gate starts uniform
    moe(x).pow(2).sum().backward()
    assert moe.gate.grad.abs().sum() > 0 and moe.whiten.grad.abs().sum() > 0


def test_registering_a_name_twice_warns(monkeypatch):
    monkeypatch.setattr(fusion.adapters, "_ADAPTERS", dict(fusion.adapters._ADAPTERS))

    @register_adapter("test-dup")
    class A(Adapter):
        def forward(self, x):
            return x

    with pytest.warns(UserWarning, match="registered again"):
        @register_adapter("test-dup")
        class B(A):
            pass

    assert get_adapter_class("test-dup") is B
