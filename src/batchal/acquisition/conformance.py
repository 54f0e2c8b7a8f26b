"""The contract every acquisition strategy meets, as executable checks.

As scikit-learn's ``check_estimator`` does for estimators: ``check_strategy(name)`` runs every
check on one registered strategy (of any label kind) and raises ``AssertionError`` naming the
first check that fails; ``checks(name)`` lists them, so a test suite can run each as its own test
(``tests/test_conformance.py`` runs every registered strategy through all of them). A strategy you
register yourself (``batchal.register``) is checked the same way; if its pool is an input batchal
does not know, pass ``make_inputs(n, seed) -> dict`` giving select()'s keyword inputs for a pool
of ``n`` points.

The contract:

- same seed, same picks and scores; indices unique, in range, ``torch.long``; scores finite;
  b = 1, b = 7 and b = N work;
- numpy arrays of any layout (C order, Fortran order, negative strides) give the picks of the
  equal tensors; float16, bfloat16, float32 and float64 are accepted; inputs that require grad
  are detached (the same picks);
- refused with ``ValueError`` naming the input: meta, complex, boolean and object values;
  integer log-probabilities (integer features, means or variances are exact numbers and
  accepted); NaN; +inf (and -inf outside log-probabilities); log-probabilities not normalised
  over their class axis, or normalised over the wrong axis; an empty pool; pools of different
  sizes; a missing pool input;
- ``num_samples`` below K refused; scalar options accepted as Python, numpy or 0-d tensor
  numbers (the same picks); bad batch sizes, seeds and unknown options refused by name.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import numpy as np
import torch

from batchal.acquisition.registry import get_strategy, select

#: Sizes of the example pools: K samples, C classes, L labels, D features, H x W pixels.
K, C, L, D, H, W = 4, 3, 3, 4, 3, 3

# What each known input is, for the checks that depend on it: "categorical" (log-probabilities
# normalised over dimension 2), "binary" (log p(label present), <= 0), "real" (features, means).
_INPUT_KIND = {"log_probs_N_K_C": "categorical", "log_probs_N_K_C_H_W": "categorical", "log_probs_N_K_L": "binary",
               "embeddings_N_D": "real", "mean_N_K": "real", "var_N_K": "positive"}


def _disagreeing(shape, generator, scale=2.0):
    """Shared part plus per-sample part: the K samples disagree (nonzero BALD)."""
    n, k, *rest = shape
    return torch.randn(n, 1, *rest, generator=generator, dtype=torch.float64) * scale + \
        torch.randn(n, k, *rest, generator=generator, dtype=torch.float64) * scale


def example_inputs(strategy: str, n: int = 12, seed: int = 0) -> dict:
    """select()'s keyword inputs for a pool of ``n`` points of the strategy's label kind (float64)."""
    spec = get_strategy(strategy)
    g = torch.Generator().manual_seed(seed + 1000)
    out: dict = {}
    if spec.needs_log_probs:
        out["log_probs_N_K_C"] = torch.log_softmax(_disagreeing((n, K, C), g), dim=2)
    if spec.needs_embeddings or spec.needs_pool_only:
        out["embeddings_N_D"] = torch.randn(n, D, generator=g, dtype=torch.float64)
    if spec.pool_input == "log_probs_N_K_L":
        out["log_probs_N_K_L"] = torch.nn.functional.logsigmoid(_disagreeing((n, K, L), g))
    elif spec.pool_input == "mean_N_K":
        out["mean_N_K"] = _disagreeing((n, K), g)
        out["noise"] = 0.25
    elif spec.pool_input == "log_probs_N_K_C_H_W":
        out["log_probs_N_K_C_H_W"] = torch.log_softmax(_disagreeing((n, K, C, H, W), g), dim=2)
    elif spec.pool_input is not None:
        raise ValueError(f"strategy {strategy!r} takes its pool as {spec.pool_input}, an input the conformance checks do not know; "
                         "pass make_inputs(n, seed) returning select()'s keyword inputs")
    if spec.kind == "regression" and "noise" in spec.options:
        out.setdefault("noise", 0.25)
    return out


def _tensors(inputs: dict) -> list[str]:
    return [name for name, value in inputs.items() if isinstance(value, torch.Tensor)]


class _Checker:
    def __init__(self, strategy: str, make_inputs: Optional[Callable[[int, int], dict]]):
        self.strategy = strategy
        self.spec = get_strategy(strategy)
        self.make = make_inputs or (lambda n, seed: example_inputs(strategy, n, seed))
        self.n = 12

    def inputs(self, n: Optional[int] = None, seed: int = 0) -> dict:
        return self.make(self.n if n is None else n, seed)

    def select(self, batch_size=5, seed=0, **inputs):
        return select(self.strategy, batch_size, seed=seed, **(inputs or self.inputs()))

    def refused(self, inputs: dict, words: str, batch_size=2, **extra) -> None:
        """select() must raise ValueError whose message matches ``words``."""
        try:
            select(self.strategy, batch_size, seed=0, **inputs, **extra)
        except ValueError as error:
            assert re.search(words, str(error)), f"{self.strategy}: refused, but the message {str(error)!r} does not say {words!r}"
            return
        raise AssertionError(f"{self.strategy}: accepted an input that must be refused with a message saying {words!r}")

    def same_picks(self, a, b, what: str) -> None:
        assert torch.equal(a.indices, b.indices), f"{self.strategy}: {what} gave picks {a.indices.tolist()}, expected {b.indices.tolist()}"

    def valid(self, selection, batch_size: int, n: Optional[int] = None) -> None:
        n = self.n if n is None else n
        picks = selection.indices.tolist()
        assert selection.indices.dtype == torch.long, f"{self.strategy}: indices of dtype {selection.indices.dtype}"
        assert len(picks) == batch_size == selection.scores.shape[0], f"{self.strategy}: {len(picks)} picks for batch_size {batch_size}"
        assert len(set(picks)) == batch_size, f"{self.strategy}: repeated picks {picks}"
        assert all(0 <= i < n for i in picks), f"{self.strategy}: picks {picks} outside the pool of {n}"
        assert torch.isfinite(selection.scores).all(), f"{self.strategy}: scores {selection.scores.tolist()} not finite"
        assert selection.strategy == self.strategy

    # --- the checks ----------------------------------------------------------------------------------

    def check_same_seed_same_picks(self):
        a, b = self.select(seed=3), self.select(seed=3)
        self.same_picks(a, b, "the same seed")
        assert torch.allclose(a.scores, b.scores, equal_nan=True), f"{self.strategy}: the same seed gave other scores"
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        self.same_picks(self.select(seed=g1), self.select(seed=g2), "equal generators")

    def check_unique_in_range_picks(self):
        for batch_size in sorted({1, min(7, self.n), self.n}):
            self.valid(self.select(batch_size=batch_size), batch_size)
        one = select(self.strategy, 1, seed=0, **self.inputs(n=1))
        assert one.indices.tolist() == [0], f"{self.strategy}: a pool of one point gave {one.indices.tolist()}"

    def check_numpy_of_any_layout(self):
        inputs = self.inputs()
        expected = self.select(**inputs)
        for layout, convert in (("C order", lambda a: np.ascontiguousarray(a)), ("Fortran order", np.asfortranarray),
                                ("negative strides", lambda a: np.flip(np.flip(a, -1).copy(), -1))):
            as_numpy = {k: convert(v.numpy()) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            self.same_picks(self.select(**as_numpy), expected, f"numpy arrays in {layout}")

    def check_every_float_dtype(self):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            inputs = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in self.inputs().items()}
            inputs = {k: self._renormalise(k, v) for k, v in inputs.items()}
            self.valid(self.select(**inputs), 5)

    def _renormalise(self, name, value):
        # log_softmax in the low precision itself, as a model in that dtype would give it.
        if _INPUT_KIND.get(name) == "categorical" and isinstance(value, torch.Tensor):
            return torch.log_softmax(value.float(), dim=2).to(value.dtype)
        return value

    def check_inputs_that_require_grad_are_detached(self):
        inputs = self.inputs()
        expected = self.select(**inputs)
        graded = {k: v.clone().requires_grad_(True) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        self.same_picks(self.select(**graded), expected, "inputs that require grad")

    def check_meta_complex_boolean_object_refused(self):
        for name in _tensors(self.inputs()):
            for what, convert in (("meta", lambda v: v.to("meta")), ("complex", lambda v: v.to(torch.complex128)),
                                  ("boolean", lambda v: v > 0), ("object", lambda v: v.numpy().astype(object))):
                inputs = self.inputs()
                inputs[name] = convert(inputs[name])
                self.refused(inputs, re.escape(name))

    def check_integer_log_probabilities_refused(self):
        for name in _tensors(self.inputs()):
            inputs = self.inputs()
            inputs[name] = inputs[name].round().long()
            if _INPUT_KIND.get(name) in ("categorical", "binary"):
                self.refused(inputs, re.escape(name))
            elif _INPUT_KIND.get(name) in ("real", "positive"):
                if _INPUT_KIND[name] == "positive":
                    inputs[name] = inputs[name].clamp(min=1)
                self.valid(self.select(**inputs), 5)

    def check_nan_and_inf_refused(self):
        for name in _tensors(self.inputs()):
            values = [float("nan"), float("inf")] + ([] if _INPUT_KIND.get(name) in ("categorical", "binary") else [-float("inf")])
            for value in values:
                inputs = self.inputs()
                bad = inputs[name].clone()
                bad.view(-1)[bad.numel() // 2] = value
                inputs[name] = bad
                self.refused(inputs, re.escape(name))

    def check_normalisation_over_the_class_axis(self):
        for name in _tensors(self.inputs()):
            kind = _INPUT_KIND.get(name)
            if kind == "categorical":
                inputs = self.inputs()
                inputs[name] = inputs[name] + 0.5
                self.refused(inputs, re.escape(name) + ".*log")
                inputs = self.inputs()
                if inputs[name].shape[1] > 1:  # normalised over the samples instead of the classes
                    inputs[name] = torch.log_softmax(inputs[name] * 3, dim=1)
                    self.refused(inputs, re.escape(name) + ".*log")
            elif kind == "binary":
                inputs = self.inputs()
                inputs[name] = inputs[name] + 1.0
                self.refused(inputs, re.escape(name) + ".*log")
            elif kind == "positive":
                inputs = self.inputs()
                inputs[name] = -inputs[name]
                self.refused(inputs, re.escape(name))

    def check_num_samples_below_k_refused(self):
        if "num_samples" not in self.spec.options:
            return
        inputs = self.inputs()
        k = next(v.shape[1] for name, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() >= 2 and name != "embeddings_N_D")
        extra = {"estimator": "sampled"} if "estimator" in self.spec.options else {}
        self.refused({**inputs, **extra, "num_samples": k - 1}, "num_samples")

    def check_empty_pool_named(self):
        inputs = self.inputs()
        names = _tensors(inputs)
        empty = {k: v[:0] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        self.refused(empty, "(" + "|".join(map(re.escape, names)) + ").*empty pool", batch_size=1)

    def check_pools_of_different_sizes_refused(self):
        names = [name for name in _tensors(self.inputs()) if not name.startswith("labelled_")]
        if len(names) < 2:
            return
        for name in names:
            inputs = self.inputs()
            inputs[name] = inputs[name][:-1]
            self.refused(inputs, "|".join(map(re.escape, names)))

    def check_missing_pool_input_refused(self):
        inputs = self.inputs()
        required = [name for name in _tensors(inputs) if name in ("log_probs_N_K_C", "embeddings_N_D") and not self.spec.needs_pool_only
                    and ((name == "log_probs_N_K_C" and self.spec.needs_log_probs) or (name == "embeddings_N_D" and self.spec.needs_embeddings))]
        required += [self.spec.pool_input] if self.spec.pool_input else []
        for name in required:
            self.refused({k: v for k, v in inputs.items() if k != name}, re.escape(name))

    def check_scalar_options_of_every_number_type(self):
        inputs = self.inputs()
        numbers = {name: value for name, value in {**self.spec.defaults, **inputs}.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool) and name in self.spec.options}
        if "num_samples" in numbers:
            numbers["num_samples"] = max(numbers["num_samples"] // 16, 64)  # the same value three ways, and quick
        for name, value in numbers.items():
            base = {**inputs, name: value}
            expected = self.select(**base)
            for kind, converted in (("numpy", np.array(value, dtype=np.float32 if isinstance(value, float) else np.int64)[()]),
                                    ("0-d tensor", torch.tensor(value))):
                self.same_picks(self.select(**{**base, name: converted}), expected, f"{name} as a {kind} number")

    def check_bad_batch_size_seed_and_option_refused(self):
        for batch_size in (0, -3, self.n + 1, 2.0, True, "5"):
            self.refused(self.inputs(), "batch_size", batch_size=batch_size)
        for seed in (-1, 1.5, "x"):
            try:
                select(self.strategy, 2, seed=seed, **self.inputs())
            except ValueError as error:
                assert "seed" in str(error)
            else:
                raise AssertionError(f"{self.strategy}: seed={seed!r} accepted")
        self.refused(self.inputs(), "unknown option", no_such_option=1)


def checks(strategy: str, make_inputs: Optional[Callable[[int, int], dict]] = None) -> list[tuple[str, Callable[[], None]]]:
    """The contract's checks for one strategy: (name, run) pairs; each run raises AssertionError on failure."""
    checker = _Checker(strategy, make_inputs)
    return [(name[len("check_"):], getattr(checker, name)) for name in CHECKS]


CHECKS = [name for name in vars(_Checker) if name.startswith("check_")]


def check_strategy(strategy: str, make_inputs: Optional[Callable[[int, int], dict]] = None) -> None:
    """Run every check of the contract (module docstring) on a registered strategy.

    Raises ``AssertionError`` naming the strategy and the failed check. ``make_inputs(n, seed)``
    gives select()'s keyword inputs for a pool of n points where batchal cannot make them itself.
    """
    for name, run in checks(strategy, make_inputs):
        try:
            run()
        except Exception as error:  # an unexpected exception fails the check too, named
            raise AssertionError(f"{strategy}: check {name!r} failed: {type(error).__name__}: {error}") from error


# --- fuzz: legal inputs at any magnitude ----------------------------------------------------------

#: The magnitudes the fuzz draws from: 10^-150 to 10^150, log-uniformly.
FUZZ_LOG10_RANGE = (-150.0, 150.0)


def fuzz_case(strategy: str, seed: int) -> tuple[dict, int]:
    """One legal input for ``strategy`` (select()'s keyword inputs and a batch size), drawn from
    ``seed``: pool of 1 to 24 points, 1 to 5 samples, logits, features and means of magnitude
    10^-150 to 10^150 (log-uniform) and, for regression, a noise variance drawn independently
    over the same range."""
    spec = get_strategy(strategy)
    rng = np.random.default_rng(seed)
    n, k, c, d = int(rng.integers(1, 25)), int(rng.integers(1, 6)), int(rng.integers(2, 5)), int(rng.integers(1, 5))
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))

    def magnitude() -> float:
        return float(10.0 ** rng.uniform(*FUZZ_LOG10_RANGE))

    out: dict = {}
    if spec.needs_log_probs:
        out["log_probs_N_K_C"] = torch.log_softmax(_disagreeing((n, k, c), g, magnitude()), dim=2)
    if spec.needs_embeddings or spec.needs_pool_only:
        out["embeddings_N_D"] = torch.randn(n, d, generator=g, dtype=torch.float64) * magnitude()
    if spec.pool_input == "log_probs_N_K_L":
        out["log_probs_N_K_L"] = torch.nn.functional.logsigmoid(_disagreeing((n, k, int(rng.integers(1, 4))), g, magnitude()))
    elif spec.pool_input == "mean_N_K":
        out["mean_N_K"] = _disagreeing((n, k), g, magnitude())
    elif spec.pool_input == "log_probs_N_K_C_H_W":
        out["log_probs_N_K_C_H_W"] = torch.log_softmax(_disagreeing((n, k, c, 2, 3), g, magnitude()), dim=2)
    if spec.kind == "regression" and "noise" in spec.options:
        out["noise"] = magnitude()
    if "num_samples" in spec.options and spec.kind != "regression":
        out["num_samples"] = 256  # >= K, and quick
    return out, int(rng.integers(1, n + 1))


def fuzz_failure(strategy: str, seed: int) -> Optional[str]:
    """None if ``strategy`` meets the contract on ``fuzz_case(strategy, seed)``: no exception, b
    unique in-range picks, every score finite, and for regression's exact greedy (running totals)
    no gain below -1e-9 of the total; else what went wrong. (The sampled joints of other kinds
    estimate their gains by Monte Carlo, which may dip below 0 by estimator noise.)"""
    import warnings

    inputs, batch_size = fuzz_case(strategy, seed)
    n = next(v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warnings (near the ceiling, identical samples) are allowed
            selection = select(strategy, batch_size, seed=seed, **inputs)
    except Exception as error:  # noqa: BLE001 - any exception on a legal input is the failure reported
        return f"{type(error).__name__}: {error}"
    picks = selection.indices.tolist()
    if len(picks) != batch_size or len(set(picks)) != batch_size or not all(0 <= i < n for i in picks):
        return f"picks {picks} for b = {batch_size} of N = {n}"
    if not torch.isfinite(selection.scores).all():
        return f"scores {selection.scores.tolist()}"
    if selection.running_total and get_strategy(strategy).kind == "regression" and len(picks) > 1:
        gains = selection.gains
        if (gains < -1e-9 * max(1.0, abs(float(selection.total)))).any():
            return f"negative gain: {gains.tolist()}"
    return None
