"""Seq2SeqTransformer: config checks, shapes, masks, positions, declared sparse layers and junctions, decoding, and a
copy task learned dense and sparse."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsebrain as sb
from sparsebrain.models.seq2seq import (
    Seq2SeqConfig,
    Seq2SeqTransformer,
    label_smoothed_loss,
    sinusoidal_positions,
)
from sparsebrain.nn.sparse_linear import SparseLinear
from sparsebrain.topology.percolation import alive_neurons

V = 20  # pad 0, bos 1, eos 2, words 3..19
PAD, BOS, EOS = 0, 1, 2


def tiny_config(**overrides) -> Seq2SeqConfig:  # type: ignore[no-untyped-def]
    kw = {"dim": 64, "n_heads": 4, "enc_layers": 2, "dec_layers": 2, "ff": 128, "dropout": 0.0, "max_len": 16}
    kw.update(overrides)
    return Seq2SeqConfig(V, V, **kw)


def tiny(seed: int = 0, **overrides) -> Seq2SeqTransformer:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return Seq2SeqTransformer(tiny_config(**overrides))


def copy_batch(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy task: ``src`` (n, 8) right-padded words of length 3-8, ``tgt`` (n, 10) = bos, the words, eos, pads."""
    lengths = torch.randint(3, 9, (n,), generator=g)
    src = torch.full((n, 8), PAD, dtype=torch.long)
    tgt = torch.full((n, 10), PAD, dtype=torch.long)
    for i, n_words in enumerate(lengths.tolist()):
        words = torch.randint(3, V, (n_words,), generator=g)
        src[i, :n_words] = words
        tgt[i, 0] = BOS
        tgt[i, 1 : n_words + 1] = words
        tgt[i, n_words + 1] = EOS
    return src, tgt


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[1]), value=PAD)


# ---------------------------------------------------------------------------------------------------------------------
# config, shapes, errors


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"dim": 0}, "dim"),
        ({"dim": 30, "n_heads": 4}, "dim"),
        ({"n_heads": 3}, "dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"max_len": 0}, "max_len"),
        ({"pad_id": 20}, "pad_id"),
        ({"eos_id": 0}, "pad_id"),
        ({"positions": "rotary"}, "positions"),
        ({"tgt_vocab": 21, "share_embeddings": True}, "share_embeddings"),
        ({"enc_layers": True}, "enc_layers"),
    ],
)
def test_config_errors_name_the_field(overrides, field) -> None:  # type: ignore[no-untyped-def]
    kw = {"src_vocab": V, "tgt_vocab": V, "dim": 32, "n_heads": 4, **overrides}
    with pytest.raises(ValueError, match=field):
        Seq2SeqConfig(**kw)


@pytest.mark.parametrize("variant", [{}, {"positions": "learned"}, {"share_embeddings": True, "tie_generator": True}])
def test_shapes(variant) -> None:  # type: ignore[no-untyped-def]
    model = tiny(**variant)
    src, tgt = torch.randint(3, V, (3, 7)), torch.randint(3, V, (3, 5))
    memory, pad = model.encode(src)
    assert memory.shape == (3, 7, 64) and pad.shape == (3, 7) and pad.dtype == torch.bool
    assert model.decode(tgt, memory, pad).shape == (3, 5, V)
    assert model(src, tgt).shape == (3, 5, V)
    assert not any(key == "pe" for key in model.state_dict())  # the sinusoidal table is rebuilt, not saved
    if variant.get("share_embeddings"):
        assert model.src_embed is model.tgt_embed and model.generator.weight is model.tgt_embed.weight


def test_length_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randint(3, V, (1, 17)), torch.randint(3, V, (1, 4)))
    with pytest.raises(ValueError, match="max_len"):
        model.greedy_decode(torch.randint(3, V, (1, 17)))
    with pytest.raises(ValueError, match="max_len"):
        model.beam_search(torch.randint(3, V, (1, 5)), max_len=17)
    with pytest.raises(ValueError, match="beam_size"):
        model.beam_search(torch.randint(3, V, (1, 5)), beam_size=0)


# ---------------------------------------------------------------------------------------------------------------------
# masks and positions


def test_decoder_is_causal() -> None:
    model = tiny(dropout=0.1).eval()
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randint(3, V, (2, 6), generator=g), torch.randint(3, V, (2, 9), generator=g)
    ref = model(src, tgt)
    for t in range(1, tgt.shape[1]):
        changed = tgt.clone()
        changed[:, t:] = torch.randint(3, V, (2, tgt.shape[1] - t), generator=g)
        out = model(src, changed)
        torch.testing.assert_close(out[:, :t], ref[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t:], ref[:, t:])  # the later positions do read the changed tokens


def test_source_padding_changes_nothing() -> None:
    model = tiny(dropout=0.1).eval()
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(3, V, (3, 6), generator=g), torch.randint(3, V, (3, 5), generator=g)
    src[1, 4:] = PAD  # sentences of different lengths in one batch
    src[2, 3:] = PAD
    padded = pad_to(src, 11)
    torch.testing.assert_close(model(padded, tgt), model(src, tgt), atol=1e-5, rtol=0)
    assert torch.equal(model.greedy_decode(padded, max_len=8), model.greedy_decode(src, max_len=8))


def test_all_pad_source_stays_finite() -> None:
    model = tiny()
    src = torch.tensor([[5, 6, 7], [PAD, PAD, PAD]])
    assert torch.isfinite(model(src, torch.tensor([[BOS, 4], [BOS, 4]]))).all()


def test_sinusoidal_positions_match_the_formula() -> None:
    n, dim = 12, 64
    table = sinusoidal_positions(n, dim)
    expected = torch.tensor(
        [
            [
                math.sin(p / 10000 ** (i / dim)) if i % 2 == 0 else math.cos(p / 10000 ** ((i - 1) / dim))
                for i in range(dim)
            ]
            for p in range(n)
        ]
    )
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=0)
    # The encoder's input is the token embedding scaled by sqrt(dim) plus that table.
    model = tiny().eval()
    seen: list[torch.Tensor] = []
    model.encoder[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    src = torch.randint(3, V, (2, n))
    model.encode(src)
    torch.testing.assert_close(seen[0], model.src_embed(src) * math.sqrt(dim) + expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# sparse layers and junctions


def expected_sparse_names(enc: int, dec: int) -> set[str]:
    names = set()
    for i in range(enc):
        names |= {f"encoder.{i}.self_attn.{p}" for p in "qkvo"} | {f"encoder.{i}.ffn.w1", f"encoder.{i}.ffn.w2"}
    for i in range(dec):
        names |= {f"decoder.{i}.{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"}
        names |= {f"decoder.{i}.ffn.w1", f"decoder.{i}.ffn.w2"}
    return names


@pytest.mark.parametrize(("enc", "dec"), [(2, 2), (1, 3)])
def test_sparse_filter_picks_every_linear_but_the_generator(enc: int, dec: int) -> None:
    model = tiny(enc_layers=enc, dec_layers=dec, tie_generator=True)
    chosen = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and model.sparse_filter(n, m)}
    assert len(chosen) == 6 * enc + 10 * dec  # per encoder layer q, k, v, o, w1, w2; per decoder layer 4 more
    assert chosen == expected_sparse_names(enc, dec)
    assert not model.sparse_filter("generator", model.generator)
    opt = torch.optim.Adam(model.parameters())
    sp = sb.DynamicSparsifier(model, opt, method="set", density=0.1, total_steps=10)
    assert set(sp.layers) == chosen and type(model.generator) is nn.Linear


def test_junctions_name_real_layers_and_pair_q_with_k() -> None:
    model = tiny(enc_layers=1, dec_layers=2)
    junctions = model.sparse_junctions()
    assert len(junctions) == 3 * 1 + 5 * 2  # (q, k), (v -> o) per attention; (w1 -> w2) per feed-forward
    modules = dict(model.named_modules())
    masks = {}
    for j in junctions:
        for name in j.layers:
            assert isinstance(modules[name], nn.Linear), name
            masks[name] = torch.ones_like(modules[name].weight, dtype=torch.bool)
        assert alive_neurons(masks, j).all()  # shapes agree along the junction
    qk = [j for j in junctions if len(j.producers) == 2]
    assert {j.producers for j in qk} == {
        ("encoder.0.self_attn.q", "encoder.0.self_attn.k"),
        ("decoder.0.self_attn.q", "decoder.0.self_attn.k"),
        ("decoder.0.cross_attn.q", "decoder.0.cross_attn.k"),
        ("decoder.1.self_attn.q", "decoder.1.self_attn.k"),
        ("decoder.1.cross_attn.q", "decoder.1.cross_attn.k"),
    }
    assert all(not j.consumers for j in qk)


def check_no_dead_ends(sp: sb.DynamicSparsifier) -> int:
    """Asserts every junction neuron is alive or has no link at all; returns how many are dead."""
    masks = {n: m.mask for n, m in sp.layers.items()}
    dead = 0
    for j in sp.junctions:
        alive = alive_neurons(masks, j)
        dead += int((~alive).sum())
        for name in j.producers:
            assert not (masks[name].any(dim=1) & ~alive).any(), f"{name}: a dead neuron keeps a row link ({j})"
        for name in j.consumers:
            assert not (masks[name].any(dim=0) & ~alive).any(), f"{name}: a dead neuron keeps a column link ({j})"
        if len(j.producers) == 2:
            q, k = (masks[name] for name in j.producers)
            assert torch.equal(q.any(dim=1), k.any(dim=1)), f"q/k head dimensions unpaired in {j}"
    return dead


def test_chts_percolation_keeps_junctions_clean() -> None:
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sp = sb.DynamicSparsifier(model, opt, method="chts", density=0.05, total_steps=60, update_interval=10, seed=0)
    assert len(sp.junctions) == 3 * 2 + 5 * 2
    g = torch.Generator().manual_seed(0)
    updates = dead = 0
    for _ in range(45):
        src, tgt = copy_batch(g, 16)
        label_smoothed_loss(model(src, tgt[:, :-1]), tgt[:, 1:], PAD).backward()
        opt.step()
        if sp.step():
            updates += 1
            dead = check_no_dead_ends(sp)
        opt.zero_grad(set_to_none=True)
    assert updates == 4
    assert dead > 0  # at density 0.05 percolation did cut neurons, so the check above was not vacuous
    assert sp.stats()["anp"] < 1.0


# ---------------------------------------------------------------------------------------------------------------------
# decoding


def test_greedy_and_beam_leave_training_mode_and_grads_alone() -> None:
    model = tiny(dropout=0.1).train()
    model.encoder[0].eval()  # a submodule's own mode survives too
    src = torch.randint(3, V, (2, 5))
    for out in (model.greedy_decode(src, max_len=6), model.beam_search(src, max_len=6)):
        assert out.dtype == torch.long and out.shape[0] == 2 and out.shape[1] <= 6 and not out.requires_grad
        assert ((out != PAD) & (out != BOS)).sum() > 0
    assert model.training and model.decoder[0].training and not model.encoder[0].training


def assert_well_formed(out: torch.Tensor, max_len: int) -> None:
    """Rows are tokens up to eos (or max_len), then pads only; no bos, no pad before the end."""
    assert out.shape[1] <= max_len and not (out == BOS).any()
    for row in out.tolist():
        end = row.index(EOS) + 1 if EOS in row else len(row)
        assert PAD not in row[:end] and all(tok == PAD for tok in row[end:])


def test_incremental_decoding_matches_the_full_decoder() -> None:
    model = tiny(seed=3, positions="learned")
    src = torch.randint(3, V, (4, 6))
    out = model.greedy_decode(src, max_len=12)
    assert_well_formed(out, 12)
    # Re-decoding the whole prefix (no cache) picks the same token at every position up to eos.
    tgt_in = torch.cat([torch.full((4, 1), BOS), out[:, :-1]], dim=1)
    logits = model(src, tgt_in)
    logits[:, :, [PAD, BOS]] = -torch.inf
    live = torch.cumsum((out == EOS).long(), 1) - (out == EOS).long() == 0
    assert torch.equal(logits.argmax(-1)[live & (out != PAD)], out[live & (out != PAD)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_is_greedy(seed: int) -> None:
    model = tiny(seed=seed)
    src = torch.randint(3, V, (6, 7))
    src[2, 4:] = PAD
    for max_len in (1, 5, 16):
        greedy = model.greedy_decode(src, max_len=max_len)
        assert_well_formed(greedy, max_len)
        assert torch.equal(model.beam_search(src, beam_size=1, max_len=max_len), greedy)


@pytest.mark.parametrize("beam_size", [2, 4])
def test_beam_search_batches_sentences_independently(beam_size: int) -> None:
    model = tiny(seed=4)
    src = torch.randint(3, V, (3, 6))
    src[1, 3:] = PAD
    batched = model.beam_search(src, beam_size=beam_size, max_len=10)
    assert_well_formed(batched, 10)
    for i in range(3):
        alone = model.beam_search(src[i : i + 1], beam_size=beam_size, max_len=10)
        assert torch.equal(pad_to(alone, batched.shape[1]), batched[i : i + 1])


def reference_beam(model: Seq2SeqTransformer, src: torch.Tensor, K: int, L: int, alpha: float) -> list[int]:
    """The documented beam search, one sentence ``src`` (1, S), in plain Python with a full decoder pass per prefix."""

    def next_log_probs(prefix: list[int]) -> torch.Tensor:
        with torch.no_grad():
            logp = model.eval()(src, torch.tensor([[BOS, *prefix]]))[0, -1].float().log_softmax(-1)
        logp[[PAD, BOS]] = -math.inf
        return logp

    beams: list[tuple[list[int], float, bool]] = [([], 0.0, False)]  # (tokens, summed log p, finished)
    best_score, best = -math.inf, []
    for t in range(L):
        cands = []
        for tokens, score, finished in beams:
            if finished:
                cands.append((tokens, score, True))
                continue
            for tok, lp in enumerate(next_log_probs(tokens).tolist()):
                if lp > -math.inf:
                    cands.append(([*tokens, tok], score + lp, tok == EOS))
        beams = sorted(cands, key=lambda c: -c[1])[:K]
        for tokens, score, finished in beams:
            if (finished and len(tokens) == t + 1) or (not finished and t == L - 1):
                if score / (t + 1) ** alpha > best_score:
                    best_score, best = score / (t + 1) ** alpha, tokens
        live = max((score for _, score, finished in beams if not finished), default=-math.inf)
        if all(f for *_, f in beams) or best_score >= max(live / min(t + 2, L) ** alpha, live / L**alpha):
            break
    return best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_matches_a_one_sentence_reference(alpha: float) -> None:
    model = tiny(seed=1)
    src = torch.randint(3, V, (4, 6), generator=torch.Generator().manual_seed(1))
    src[3, 2:] = PAD
    for K in (2, 3):
        out = model.beam_search(src, beam_size=K, max_len=6, length_penalty=alpha)
        for i in range(4):
            assert [tok for tok in out[i].tolist() if tok != PAD] == reference_beam(model, src[i : i + 1], K, 6, alpha)


def test_wider_beam_finds_better_sequences() -> None:
    model = tiny(seed=0)  # untrained: flat distributions, where greedy choices are often not the best sequences
    src = torch.randint(3, V, (16, 6), generator=torch.Generator().manual_seed(0))
    greedy = model.sequence_scores(src, model.greedy_decode(src, max_len=8), length_penalty=0.0)
    beam = model.sequence_scores(src, model.beam_search(src, beam_size=4, max_len=8, length_penalty=0.0), 0.0)
    assert (beam >= greedy - 1e-4).all() and (beam > greedy + 1e-3).sum() >= 4


def test_label_smoothed_loss() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, V, generator=g, requires_grad=True)
    target = torch.tensor([[5, 6, EOS, PAD], [7, EOS, PAD, PAD]])
    eps = 0.1
    logp = logits.log_softmax(-1)
    keep = target != PAD
    nll = -logp.gather(2, target[..., None])[..., 0]
    expected = ((1 - eps) * nll - eps * logp.mean(-1))[keep].mean()
    torch.testing.assert_close(label_smoothed_loss(logits, target, PAD, eps), expected)
    empty = label_smoothed_loss(logits, torch.full((2, 4), PAD), PAD)
    assert float(empty.detach()) == 0.0 and empty.requires_grad


# ---------------------------------------------------------------------------------------------------------------------
# learning the copy task, dense and sparse


def train_copy(method: str, steps: int = 300, seed: int = 0) -> Seq2SeqTransformer:
    model = tiny(seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Short warm-up then cosine decay: Adam at 1e-2 is unsteady over the first steps, and the decay lets the last
    # steps settle (sparse models need the high rate: SWI-initialised, and regrown links start at 0).
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    sp = None
    if method != "dense":
        sp = sb.DynamicSparsifier(model, opt, method=method, density=0.3, total_steps=steps, update_interval=50, seed=0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        src, tgt = copy_batch(g, 64)
        loss = label_smoothed_loss(model(src, tgt[:, :-1]), tgt[:, 1:], PAD, smoothing=0.0)
        loss.backward()
        opt.step()
        sched.step()
        if sp is not None:
            sp.step()
        opt.zero_grad(set_to_none=True)
    if sp is not None:
        assert sp.stats()["updates"] == 4 and abs(sp.stats()["density"] - 0.3) < 0.01
        check_no_dead_ends(sp)
    return model


@pytest.fixture(scope="module")
def trained() -> dict[str, Seq2SeqTransformer]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped, so outside the reach of the per-test fixture
    try:
        return {method: train_copy(method) for method in ("dense", "chts")}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["dense", "chts"])
def test_copy_task_is_learned(trained, method: str) -> None:  # type: ignore[no-untyped-def]
    model = trained[method]
    src, tgt = copy_batch(torch.Generator().manual_seed(123), 100)
    out = model.greedy_decode(src, max_len=10)
    assert_well_formed(out, 10)
    ref = tgt[:, 1:]
    width = max(out.shape[1], ref.shape[1])
    exact = (pad_to(out, width) == pad_to(ref, width)).all(dim=1).float().mean()
    assert exact >= 0.8, f"{method}: only {float(exact):.0%} of the copies are exact"
    if method != "dense":
        assert all(isinstance(model.get_submodule(n), SparseLinear) for n in expected_sparse_names(2, 2))


@pytest.mark.parametrize("method", ["dense", "chts"])
def test_beam_scores_at_least_greedy(trained, method: str) -> None:  # type: ignore[no-untyped-def]
    model = trained[method]
    src, _ = copy_batch(torch.Generator().manual_seed(7), 40)
    greedy = model.greedy_decode(src, max_len=10)
    assert torch.equal(model.beam_search(src, beam_size=1, max_len=10), greedy)
    for alpha in (0.0, 1.0):
        beam = model.beam_search(src, beam_size=2, max_len=10, length_penalty=alpha)
        assert_well_formed(beam, 10)
        s_beam = model.sequence_scores(src, beam, length_penalty=alpha)
        s_greedy = model.sequence_scores(src, greedy, length_penalty=alpha)
        assert (s_beam >= s_greedy - 1e-4).all(), (s_beam - s_greedy).min()
