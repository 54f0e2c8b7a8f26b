"""Models that take dict batches and return `.logits` (the Hugging Face convention): consistent MC
dropout on a tiny randomly initialised BERT classifier built from a config (nothing downloaded)."""

import pytest
import torch
from torch import nn

import batchal


class KeywordModel(nn.Module):
    """forward(input_ids, attention_mask) -> an object with .logits, dropout after an embedding."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids, attention_mask):
        h = self.dropout(self.embed(input_ids))  # [B, L, 16]
        pooled = (h * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        return type("Output", (), {"logits": self.head(pooled)})()


def tokens(n=12, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n, length), generator=g)
    mask = (torch.arange(length)[None, :] < torch.randint(2, length + 1, (n, 1), generator=g)).long()
    return {"input_ids": ids, "attention_mask": mask}


def test_a_dict_batch_model_gets_consistent_masks_and_its_logits_unpacked():
    model = batchal.convert_dropout(KeywordModel())
    data = tokens()
    a = batchal.predict_log_probs(model, data, k=5, batch_size=4, seed=1)
    b = batchal.predict_log_probs(model, data, k=5, batch_size=12, seed=1)
    assert a.shape == (12, 5, 3) and torch.allclose(a, b)  # the same K masks whatever the chunking
    assert not torch.allclose(a[:, 0], a[:, 1])  # the masks differ between samples
    # Each item alone gives its own rows: the attention mask was repeated with the inputs.
    alone = batchal.predict_log_probs(model, {k: v[3:4] for k, v in data.items()}, k=5, seed=1)
    assert torch.allclose(alone[0], a[3], atol=1e-6)
    emb, lp1 = batchal.predict_embeddings(model, data)
    assert emb.shape == (12, 16) and lp1.shape == (12, 1, 3)
    batch = batchal.select("batchbald", 3, log_probs_N_K_C=a, seed=0)
    assert len(set(batch.indices.tolist())) == 3


def test_a_tiny_random_bert_classifier_scores_and_selects():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = batchal.convert_dropout(transformers.BertForSequenceClassification(config))  # its nn.Dropout modules
    data = tokens(n=10, length=8)
    log_probs = batchal.predict_log_probs(model, data, k=4, batch_size=3, seed=0)
    assert log_probs.shape == (10, 4, 3) and torch.isfinite(log_probs).all()
    assert not torch.allclose(log_probs[:, 0], log_probs[:, 1])
    again = batchal.predict_log_probs(model, data, k=4, batch_size=10, seed=0)
    assert torch.allclose(log_probs, again, atol=1e-5)
    emb, lp1 = batchal.predict_embeddings(model, data)
    assert emb.shape == (10, 16)
    assert len(batchal.select("batchbald", 3, log_probs_N_K_C=log_probs, seed=0)) == 3
    assert len(batchal.select("badge", 3, log_probs_N_K_C=lp1, embeddings_N_D=emb, seed=0)) == 3
