"""Every registered model against the sparse-model protocol: its junctions name real sparse layers whose shapes
agree on the junction's neurons, whether it declares them or the sparsifier infers them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import sparsebrain as sb
from sparsebrain.dst.sparsifier import auto_junctions
from sparsebrain.models import MODELS, SparseModel
from sparsebrain.nn import default_filter, sparse_layers

# A tiny instance of each registered model. A model added to the registry must be added here too.
TINY: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: sb.models.MLP(12, [16, 16], 4),
    "llama": lambda: sb.models.LlamaLM.from_name("llama-tiny", vocab_size=40, max_seq_len=16),
    "seq2seq": lambda: sb.models.Seq2SeqTransformer(
        sb.models.Seq2SeqConfig(20, 20, dim=32, n_heads=4, enc_layers=2, dec_layers=2, ff=64, max_len=16)
    ),
    "minilm": lambda: sb.models.SentenceEncoder(
        sb.models.BertConfig(vocab_size=50, hidden=32, n_layers=2, n_heads=4, intermediate=64, max_positions=16)
    ),
    "vit": lambda: sb.models.ViT(64, 64, 3, input_shape=(1, 8, 8), depth=2, heads=2, mlp_ratio=2, patch=4),
    "rsgn": lambda: sb.models.RSGN(8, 3, num_nodes=32, hidden=8, rank=4, num_neighbors=4),
    "seq_mlp": lambda: sb.models.SequenceMLP(8, 3, seq_len=6, hidden=(16, 16)),
    "seq_transformer": lambda: sb.models.SequenceTransformer(8, 3, seq_len=8, dim=16, heads=2),
    "seq_sparse_transformer": lambda: sb.models.SparseTransformer(8, 3, seq_len=8, dim=16, heads=2),
    "seq_bilstm": lambda: sb.models.BiLSTM(8, 3, hidden=16, layers=1),
}


def test_every_registered_model_has_a_tiny_instance_here() -> None:
    assert sorted(MODELS.names()) == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_junctions_name_sparse_layers_that_agree_on_their_neurons(name: str) -> None:
    torch.manual_seed(0)
    model = TINY[name]()
    declared = isinstance(model, SparseModel)
    filter_fn = default_filter(model)  # the model's own where it declares one
    if not any(filter_fn(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)):
        pytest.skip(f"{name} has no layer to sparsify")
    sb.sparsify_(model, 0.5, filter_fn=filter_fn)
    layers = sparse_layers(model)
    junctions = auto_junctions(model, layers)
    assert not declared or junctions == model.sparse_junctions()
    for junction in junctions:
        for fqn in (*junction.producers, *junction.consumers):
            assert fqn in layers, f"{name}: {junction} names {fqn!r}, which is not a sparse layer"
        sizes = {layers[p].out_features for p in junction.producers}
        sizes |= {layers[c].in_features for c in junction.consumers}
        assert len(sizes) == 1, f"{name}: {junction} joins layers of different widths {sorted(sizes)}"
