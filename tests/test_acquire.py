"""batchal.acquire, the one path from a model and a pool to a batch: what it hands a strategy,
how it maps picks back, and that no code outside the strategies dispatches on a strategy's name."""

import ast
import re
from pathlib import Path

import pytest
import torch

import batchal
from batchal.acquire import SEED_SCORE, SEED_SELECT, ModelPredictions, acquire, round_seed, strategy_inputs
from batchal.acquisition.registry import get_strategy, strategies

SRC = Path(__file__).resolve().parents[1] / "src" / "batchal"


class Recorder:
    """Predictions that record what was asked of them."""

    def __init__(self, n=30, d=4, c=3, k_max=8):
        g = torch.Generator().manual_seed(0)
        self.h = torch.randn(n, d, generator=g, dtype=torch.float64)
        self.lp = torch.log_softmax(torch.randn(n, k_max, c, generator=g, dtype=torch.float64) * 2, -1)
        self.asked = []

    def log_probs(self, positions, k, seed):
        self.asked.append(("log_probs", list(positions), k, seed))
        return self.lp[positions, :k]

    def features(self, positions):
        self.asked.append(("features", list(positions)))
        return self.h[positions], self.lp[positions, :1]


@pytest.mark.parametrize("strategy", strategies("classification"))
def test_a_strategy_is_given_exactly_what_its_record_declares(strategy):
    spec, predictions = get_strategy(strategy), Recorder()
    inputs = strategy_inputs(spec, predictions, [3, 5, 7], [0, 1], mc_samples=6, seed=11)
    asked = {entry[0] for entry in predictions.asked}
    assert ("log_probs" in asked) == (spec.log_probs_from == "samples")
    assert ("features" in asked) == (spec.needs_embeddings or bool(spec.needs_labelled))
    assert ("log_probs_N_K_C" in inputs) == spec.needs_log_probs
    if spec.log_probs_from == "samples":
        assert inputs["log_probs_N_K_C"].shape == (3, 6, 3) and ("log_probs", [3, 5, 7], 6, 11) in predictions.asked
    for name in spec.needs_labelled:
        assert inputs[name].shape[0] == 2  # the labelled set's
    if spec.needs_pool_only:
        assert set(inputs) == {"embeddings_N_D"} and not predictions.asked  # nothing of the model


def test_picks_come_back_as_positions_of_the_inputs_from_a_subsample():
    predictions = Recorder()
    pool = list(range(5, 30))
    result = acquire("bald", predictions, pool, 4, seed=2, round_=1, mc_samples=6, subsample=10)
    assert len(result.candidates) == 10 and set(result.candidates) <= set(pool)
    # The strategy ran on the candidates: its positions map through them.
    assert result.picked == [result.candidates[i] for i in result.selection.indices.tolist()]
    by_hand = batchal.select("bald", 4, log_probs_N_K_C=predictions.lp[result.candidates, :6], seed=round_seed(2, 1, SEED_SELECT))
    assert result.picked == [result.candidates[i] for i in by_hand.indices.tolist()]
    assert ("log_probs", result.candidates, 6, round_seed(2, 1, SEED_SCORE)) in predictions.asked
    assert result.ids([f"id{i}" for i in range(30)]) == [f"id{p}" for p in result.picked]


def test_protocol_settings_reach_only_the_strategies_that_take_them_and_options_are_checked():
    predictions = Recorder()
    protocol = {"num_samples": 500, "prefilter": 2}  # prefilter is raised to the batch
    picked = acquire("batchbald", predictions, range(30), 4, mc_samples=6, protocol=protocol).picked
    assert picked == acquire("batchbald", predictions, range(30), 4, mc_samples=6, options={"num_samples": 500, "prefilter": 4}).picked
    assert len(acquire("margin", predictions, range(30), 4, mc_samples=6, protocol=protocol).picked) == 4
    with pytest.raises(ValueError, match="unknown option"):
        acquire("margin", predictions, range(30), 4, options={"num_samples": 500})
    with pytest.raises(ValueError, match="pool is empty"):
        acquire("random", predictions, [], 4)
    with pytest.raises(ValueError, match="log_probs_N_K_L"):
        acquire("multilabel_bald", predictions, range(30), 4)


def test_an_ensemble_gives_its_members_as_the_samples():
    torch.manual_seed(0)
    members = [torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)) for _ in range(3)]
    x = torch.randn(20, 4)
    lp = ModelPredictions(members, x).log_probs([1, 2, 3], k=50, seed=0)
    assert lp.shape == (3, 3, 3)  # K = the members, whatever k says
    expected = torch.stack([torch.log_softmax(m(x[[1, 2, 3]]), -1) for m in members], 1)
    assert torch.allclose(lp.float(), expected, atol=1e-5)


def _compared_names(path: Path, names: set[str]) -> list[str]:
    """String literals naming a strategy compared (==, !=, in, not in) with something named like
    a strategy (``strategy``, ``config.strategy``, ``args.strategy``...). Other settings that
    share a word with a strategy (``initial_selection == "random"``) are not strategies."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        if not any("strategy" in ast.unparse(side) for side in sides):
            continue
        for side in sides:
            constants = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            found += [f"{path.name}:{node.lineno}: {c.value!r}" for c in constants
                      if isinstance(c, ast.Constant) and c.value in names]
    return found


def test_no_strategy_name_is_compared_outside_the_strategies():
    """Which inputs, which scores, which sharded form: the registry's records say, never a name."""
    names = set(strategies())
    offenders = []
    for path in SRC.rglob("*.py"):
        if "acquisition" in path.parts:
            continue
        offenders += _compared_names(path, names)
    page = (SRC / "labelling" / "page.html").read_text()
    offenders += [f"page.html: {m}" for m in re.findall(r"strategy\s*[!=]==?\s*\"\w+\"", page)]
    assert offenders == []


def test_the_name_check_finds_a_comparison(tmp_path):
    """The check above can fail: a comparison like those it forbids is found."""
    bad = tmp_path / "bad.py"
    bad.write_text('def f(strategy):\n    return strategy == "coreset" or strategy in ("badge", "x")\n')
    assert len(_compared_names(bad, set(strategies()))) == 2
