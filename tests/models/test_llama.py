"""LlamaLM: shapes, sizes, causality, RoPE against the formula, declared sparse layers and junctions, a DST run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import dead_ends
from torch import nn

import sparsebrain as sb
from sparsebrain.models.llama import (
    LLAMA_SIZES,
    LlamaConfig,
    LlamaLM,
    apply_rope,
    llama_config,
    rope_cache,
)
from sparsebrain.nn.sparse_linear import SparseLinear

VOCAB = 50


def tiny(seed: int = 0, **overrides) -> LlamaLM:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return LlamaLM.from_name("llama-tiny", VOCAB, **overrides)


# ---------------------------------------------------------------------------------------------------------------------
# shapes, sizes, errors


def test_tiny_shapes() -> None:
    model = tiny()
    idx = torch.randint(0, VOCAB, (3, 17))
    assert model(idx).shape == (3, 17, VOCAB)
    assert model(idx[:, :1]).shape == (3, 1, VOCAB)
    # The RoPE tables are rebuilt from the config, not saved.
    assert not any("rope" in key for key in model.state_dict())


def expected_params(dim: int, n_layers: int, intermediate: int, vocab: int, tied: bool) -> tuple[int, int]:
    """(non-embedding, total) parameters of the architecture, by formula."""
    per_block = 4 * dim * dim + 3 * dim * intermediate + 2 * dim  # q, k, v, o; gate, up, down; two RMSNorms
    body = n_layers * per_block + dim  # + the final RMSNorm
    return body, body + vocab * dim * (1 if tied else 2)


@pytest.mark.parametrize("tied", [False, True])
def test_llama_60m_parameter_count(tied: bool) -> None:
    model = LlamaLM.from_name("llama-60m", 32000, device="meta", tie_embeddings=tied)
    body, total = expected_params(512, 8, 1280, 32000, tied)
    assert model.num_parameters() == body == 24_125_952
    assert model.num_parameters(non_embedding=False) == total
    assert 50e6 < total < 60e6 if not tied else 35e6 < total < 45e6  # "60M" with the LLaMA tokenizer, untied
    assert (model.lm_head.weight is model.tok_emb.weight) == tied


def test_named_sizes() -> None:
    assert set(LLAMA_SIZES) == {"llama-tiny", "llama-20m", "llama-60m", "llama-130m"}
    for name, size in LLAMA_SIZES.items():
        cfg = llama_config(name, 1000)
        model = LlamaLM(cfg, device="meta")
        body, _ = expected_params(size["dim"], size["n_layers"], size["intermediate"], 1000, False)
        assert model.num_parameters() == body, name
    assert llama_config("llama-20m", 100, max_seq_len=64, dropout=0.1).max_seq_len == 64


def test_sequence_too_long() -> None:
    model = tiny(max_seq_len=16)
    with pytest.raises(ValueError, match=r"T=17.*max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(17, dtype=torch.long))


def test_unknown_size_suggests_closest() -> None:
    with pytest.raises(ValueError, match=r"llama-130m.*llama-20m.*llama-60m.*llama-tiny.*Did you mean 'llama-60m'"):
        llama_config("llama-60", 100)
    with pytest.raises(ValueError, match=r"Did you mean 'n_layers'"):
        llama_config("llama-tiny", 100, n_layer=3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"dim": -8}, "dim"),
        ({"n_layers": 1.5}, "n_layers"),
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"intermediate": 0}, "intermediate"),
        ({"dim": 64, "n_heads": 3}, "n_heads"),
        ({"dim": 12, "n_heads": 4}, "even"),  # head size 3: RoPE needs pairs
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"rope_theta": -1.0}, "rope_theta"),
        ({"dropout": 1.0}, "dropout"),
        ({"tie_embeddings": "yes"}, "tie_embeddings"),
    ],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LlamaConfig(**{"vocab_size": 10, "dim": 64, "n_heads": 4, **kwargs})


# ---------------------------------------------------------------------------------------------------------------------
# causality and RoPE


def test_causal_masking() -> None:
    model = tiny().eval()
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    base = model(idx)
    for t in (1, 7, 23):
        changed = idx.clone()
        changed[:, t:] = (changed[:, t:] + 1 + torch.arange(24 - t)) % VOCAB  # every later token differs
        out = model(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t], base[:, t])  # and the change is visible where it is allowed


def test_rope_dot_product_depends_on_relative_position() -> None:
    hs, T = 8, 40
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(hs, generator=g), torch.randn(hs, generator=g)
    cos, sin = rope_cache(hs, T)
    rq = apply_rope(q.expand(1, 1, T, hs), cos, sin)[0, 0]  # (T, hs): q placed at every position
    rk = apply_rope(k.expand(1, 1, T, hs), cos, sin)[0, 0]
    for m, n in [(0, 0), (3, 1), (1, 9), (12, 5)]:
        for s in (1, 7, 20):
            assert torch.allclose(rq[m] @ rk[n], rq[m + s] @ rk[n + s], atol=1e-5)
    assert not torch.allclose(rq[5] @ rk[0], rq[0] @ rk[5], atol=1e-3)  # but it does depend on the offset


def test_rope_matches_explicit_rotation() -> None:
    hs, T, theta = 6, 5, 100.0
    x = torch.randn(1, 2, T, hs, generator=torch.Generator().manual_seed(2))
    cos, sin = rope_cache(hs, T, theta)
    out = apply_rope(x, cos, sin)
    half = hs // 2
    for h in range(2):
        for m in range(T):
            for i in range(half):
                angle = m * theta ** (-2 * i / hs)
                a, b = float(x[0, h, m, i]), float(x[0, h, m, i + half])  # plane i: dimensions i and i + hs/2
                want = (a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle))
                got = (float(out[0, h, m, i]), float(out[0, h, m, i + half]))
                assert got == pytest.approx(want, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# sparse layers and percolation junctions


def sparse_names(n_layers: int) -> set[str]:
    names = [f"blocks.{i}.attn.{p}" for i in range(n_layers) for p in "qkvo"]
    return set(names + [f"blocks.{i}.mlp.{p}" for i in range(n_layers) for p in ("gate", "up", "down")])


def test_sparse_filter_picks_the_seven_projections() -> None:
    for n_layers in (2, 3):
        model = tiny(n_layers=n_layers)
        picked = {name for name, m in model.named_modules() if model.sparse_filter(name, m)}
        assert picked == sparse_names(n_layers)
        assert len(picked) == 7 * n_layers
    names = dict(model.named_modules())
    for junction in model.sparse_junctions():  # fully qualified names of real modules
        assert all(isinstance(names[n], nn.Linear) for n in junction.layers)


def lm_loss(model: LlamaLM, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch[:, :-1])  # (B, T, vocab)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def test_sparsifier_uses_declared_layers_and_junctions() -> None:
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sp = sb.DynamicSparsifier(model, opt, method="chts", density=0.05, total_steps=40, update_interval=5, seed=0)
    assert set(sp.layers) == sparse_names(2)
    assert sp.junctions == model.sparse_junctions()
    assert type(model.lm_head) is nn.Linear and type(model.tok_emb) is nn.Embedding
    assert not isinstance(model.blocks[0].attn_norm, SparseLinear)

    # A head dimension with no link in k: percolation must empty the same row of q at the next update; likewise a
    # hidden MLP neuron with no link in up must lose its gate row and down column.
    k, up = model.blocks[0].attn.k, model.blocks[0].mlp.up
    k_mask, up_mask = k.mask.clone(), up.mask.clone()
    k_mask[3], up_mask[5] = False, False
    k.set_mask_(k_mask)
    up.set_mask_(up_mask)
    g = torch.Generator().manual_seed(0)
    updates = 0
    for _ in range(30):
        lm_loss(model, torch.randint(0, VOCAB, (8, 17), generator=g)).backward()
        opt.step()
        updated = sp.step()
        opt.zero_grad(set_to_none=True)
        if not updated:
            continue
        updates += 1
        masks = {name: layer.mask for name, layer in sp.layers.items()}
        assert all(dead_ends(masks, j) == 0 for j in sp.junctions)
        for i in range(2):
            a, m = f"blocks.{i}.attn", f"blocks.{i}.mlp"
            # Q and K pairing: a dimension has links in q iff it has links in k.
            assert torch.equal(masks[f"{a}.q"].any(1), masks[f"{a}.k"].any(1))
            assert torch.equal(masks[f"{a}.v"].any(1), masks[f"{a}.o"].any(0))
            gate_rows = masks[f"{m}.gate"].any(1)
            assert torch.equal(gate_rows, masks[f"{m}.up"].any(1))
            assert torch.equal(gate_rows, masks[f"{m}.down"].any(0))
        if updates == 1:  # CH regrowth never revives a neuron without links
            assert not masks["blocks.0.attn.q"][3].any() and not masks["blocks.0.attn.k"][3].any()
            assert not masks["blocks.0.mlp.gate"][5].any() and not masks["blocks.0.mlp.down"][:, 5].any()
    assert updates == 6
    assert sp.stats()["density"] == pytest.approx(0.05, abs=1e-3)
    assert 0 < sp.stats()["anp"] < 1


# ---------------------------------------------------------------------------------------------------------------------
# a short DST run


def markov_tokens(n_batches: int, batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    """Sequences of a fixed random Markov chain in which every token has 2 equally likely successors."""
    g = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, VOCAB, (VOCAB, 2), generator=g)
    tokens = torch.empty(n_batches * batch, seq + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, VOCAB, (n_batches * batch,), generator=g)
    for t in range(seq):
        choice = torch.randint(0, 2, (n_batches * batch,), generator=g)
        tokens[:, t + 1] = successors[tokens[:, t], choice]
    return tokens.view(n_batches, batch, seq + 1)


@pytest.mark.parametrize("method", ["chtss", "set"])
def test_dst_training_reduces_loss(method: str) -> None:
    steps, density = 150, 0.3
    data = markov_tokens(steps, 16, 32)
    model = tiny(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    sp = sb.DynamicSparsifier(model, opt, method=method, density=density, total_steps=steps, update_interval=20, seed=1)
    losses = []
    for step in range(steps):
        loss = lm_loss(model, data[step])
        loss.backward()
        opt.step()
        sp.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    assert sp.stats()["updates"] == 5
    assert sp.stats()["density"] == pytest.approx(density, abs=2e-3)
    for layer in sp.layers.values():  # off-mask weights stayed exactly zero under AdamW
        assert not layer.weight[~layer.mask].any()
