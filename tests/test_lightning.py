"""The Lightning adapter: Trainer.predict with consistent MC dropout equals batchal's own predictions."""

import pytest
import torch
from torch import nn

import batchal

lightning = pytest.importorskip("lightning")


class Classifier(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.4), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)

    def predict_step(self, batch, batch_idx):
        x, _ = batch
        return self(x)


def test_trainer_predict_gives_the_same_samples_as_predict_log_probs():
    from batchal.integrations.lightning import predict_log_probs

    torch.manual_seed(0)
    x = torch.randn(40, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(40)), batch_size=16)
    module = Classifier()
    trainer = lightning.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                                enable_checkpointing=False)
    lp = predict_log_probs(trainer, module, loader, k=6, seed=3)
    assert lp.shape == (40, 6, 3) and not torch.allclose(lp[:, 0], lp[:, 1])
    direct = batchal.predict_log_probs(module.net, x, k=6, batch_size=16, seed=3)
    assert torch.allclose(lp, direct, atol=1e-6)
    assert len(batchal.select("batchbald", 4, log_probs_N_K_C=lp, seed=0)) == 4


@pytest.mark.parametrize("strategy", ["batchbald", "badge", "coreset", "random"])
def test_the_lightning_query_picks_what_the_seam_picks(strategy):
    """The same module and pool through Trainer.predict and through batchal's own predictions."""
    from batchal.acquire import ModelPredictions, acquire
    from batchal.integrations.lightning import query

    torch.manual_seed(0)
    x = torch.randn(40, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(40)), batch_size=16)
    module = Classifier()
    batchal.convert_dropout(module)
    trainer = lightning.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                                enable_checkpointing=False)
    picks = query(trainer, module, loader, 4, strategy=strategy, k=6, seed=3, round_=1)
    expected = acquire(strategy, ModelPredictions([module.net], x, batch_size=16), range(40), 4, seed=3, round_=1, mc_samples=6).picked
    assert picks == expected and len(set(picks)) == 4
