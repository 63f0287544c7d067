"""Models whose sparse layers and percolation chains are declared."""

from ..registry import Registry
from .llama import LLAMA_SIZES, LlamaConfig, LlamaLM, llama_config
from .minilm import BertConfig, BertEncoder, SentenceEncoder, load_minilm
from .mlp import MLP
from .protocol import SparseModel
from .rsgn import RSGN
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer, label_smoothed_loss
from .sequence_baselines import BiLSTM, SequenceMLP, SequenceTransformer, SparseTransformer
from .vit import ViT

__all__ = [
    "LLAMA_SIZES",
    "MLP",
    "MODELS",
    "RSGN",
    "BertConfig",
    "BertEncoder",
    "LlamaConfig",
    "LlamaLM",
    "SentenceEncoder",
    "Seq2SeqConfig",
    "Seq2SeqTransformer",
    "SparseModel",
    "ViT",
    "label_smoothed_loss",
    "llama_config",
    "load_minilm",
]

# Each entry is the model class; the experiments CLI picks the task from the name (mlp, vit: classification,
# llama: language modelling, seq2seq: translation, minilm: sentence-embedding distillation, rsgn and seq_*: sequence
# classification).
MODELS: Registry[type] = Registry("model")
MODELS.register("mlp", MLP)
MODELS.register("llama", LlamaLM)
MODELS.register("seq2seq", Seq2SeqTransformer)
MODELS.register("minilm", SentenceEncoder)
MODELS.register("vit", ViT)
MODELS.register("rsgn", RSGN)  # sequence classification on the RSGN paper's synthetic tasks
# RSGN's baselines, same task; the CLI builds them through sequence_baselines.build_sequence_baseline (budget matching)
MODELS.register("seq_mlp", SequenceMLP)
MODELS.register("seq_transformer", SequenceTransformer)
MODELS.register("seq_sparse_transformer", SparseTransformer)
MODELS.register("seq_bilstm", BiLSTM)
