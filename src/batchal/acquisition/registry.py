"""One contract for every acquisition strategy: ``select(strategy, batch_size, ...) -> Selection``.

Every strategy is registered here with the inputs it needs and the options it takes; ``select``
validates inputs and options once, in the same way for all of them, then calls the strategy.
``Selection.indices`` are positions into the given pool (0..N-1), unique, in pick order.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np
import torch

from batchal.acquisition import albl as _albl
from batchal.acquisition import badge as _badge
from batchal.acquisition import bait as _bait
from batchal.acquisition import batchbald as _bb
from batchal.acquisition import clustering as _clustering
from batchal.acquisition import coreset as _coreset
from batchal.acquisition import dense as _dense
from batchal.acquisition import factorised as _factorised
from batchal.acquisition import multilabel as _multilabel
from batchal.acquisition import regression as _regression
from batchal.acquisition import epig as _epig
from batchal.acquisition import kdpp as _kdpp
from batchal.acquisition import scores as _scores
from batchal.checks import as_number, check_batch_size, check_positive_float, check_positive_int, check_random_state, is_real_number
from batchal.acquisition.validation import (
    check_embeddings,
    check_finite,
    check_log_probs,
    embedding_exponent,
    embedding_scale,
    rescale,
    samples_identical,
)


class SamplesWarning(UserWarning):
    """The K posterior samples given to a strategy that needs them to disagree are all the same."""


#: Strategies whose scores come from disagreement between the K samples.
_NEEDS_DISAGREEMENT = {"bald", "batchbald", "power_bald", "variation_ratios", "mean_std", "epig", "power_epig"}


@dataclass
class Selection:
    """The result of a selection.

    indices: LongTensor of positions into the given pool, in pick order, unique.
    scores: float64 tensor, one score per pick (its meaning is documented per strategy).
    strategy: the strategy's name.
    info: strategy-specific figures (e.g. how many candidate gains BatchBALD evaluated).
    """

    indices: torch.Tensor
    scores: torch.Tensor
    strategy: str
    info: dict[str, Any] = field(default_factory=dict)
    #: True when ``scores`` are the batch's running total after each pick (BatchBALD's I(y_1..y_n; w)),
    #: False when each score is the pick's own value (its registry record says which).
    running_total: bool = False

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def gains(self) -> torch.Tensor:
        """Each pick's own contribution: the scores, or their differences for a running total."""
        if not self.running_total or len(self.scores) == 0:
            return self.scores
        return torch.cat([self.scores[:1], self.scores[1:] - self.scores[:-1]])

    @property
    def total(self) -> float:
        """The batch's value: the last running total, or the sum of the picks' scores."""
        if len(self.scores) == 0:
            return 0.0
        return float(self.scores[-1] if self.running_total else self.scores.sum())


@dataclass(frozen=True)
class Inputs:
    """Validated inputs handed to a strategy."""

    batch_size: int
    generator: torch.Generator
    log_probs_N_K_C: Optional[torch.Tensor]
    embeddings_N_D: Optional[torch.Tensor]
    progress: Optional[Callable[[int, int], None]]
    pool: Optional[int] = None  # the pool's size when a label kind's own input carries it
    #: e where select() rescaled the features (and labelled features) by 2^e (0: not rescaled).
    embedding_exponent: int = 0

    @property
    def pool_size(self) -> int:
        if self.pool is not None:
            return self.pool
        tensor = self.log_probs_N_K_C if self.log_probs_N_K_C is not None else self.embeddings_N_D
        return tensor.shape[0]


@dataclass(frozen=True)
class Strategy:
    name: str
    run: Callable[..., tuple[list[int] | torch.Tensor, list[float] | torch.Tensor, dict]]
    needs_log_probs: bool
    needs_embeddings: bool
    summary: str
    options: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # name -> checker
    #: For label kinds beyond single-label classification (multi-label, regression, dense): the
    #: option that carries the pool (e.g. "mean_N_K"); select() then requires it instead of
    #: log_probs_N_K_C or embeddings_N_D.
    pool_input: Optional[str] = None
    #: The label kind the strategy serves: classification, multi-label, regression or segmentation.
    kind: str = "classification"
    #: Whether a pick's score is the batch's running total after it (see Selection.running_total).
    running_total: bool = False
    #: How ``batchal select`` runs it over a scored folder shard by shard (batchal.distributed.selection):
    #: "random", "top_b" (of the score column ``score_column``), "power" (Gumbel-top-b on ``score_column``),
    #: "kmeans_pp", "k_center" or "prefiltered_batchbald"; None: not over a scored folder.
    sharded: Optional[str] = None
    score_column: Optional[str] = None
    #: When to use it: a sentence or two for its documentation page (``batchal describe`` and the site).
    when: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        params = inspect.signature(self.run).parameters
        return {name: params[name].default for name in self.options}

    @property
    def needs_pool_only(self) -> bool:
        """The strategy needs nothing of the model: only the pool's size (``random``)."""
        return not (self.needs_log_probs or self.needs_embeddings or self.pool_input)

    @property
    def log_probs_from(self) -> Optional[str]:
        """Where its log-probabilities come from: "samples" (K posterior samples: MC dropout or an
        ensemble's members), "features_pass" (the dropout-off prediction of the pass that gives the
        features: BADGE's p), or None when it needs none."""
        if not self.needs_log_probs:
            return None
        return "features_pass" if self.needs_embeddings else "samples"

    @property
    def needs_labelled(self) -> tuple[str, ...]:
        """The inputs about the labelled set it takes: labelled_embeddings and/or labelled_log_probs."""
        return tuple(name for name in ("labelled_embeddings", "labelled_log_probs") if name in self.options)

    @property
    def stateful(self) -> bool:
        """It carries state between rounds (``info["state"]`` passed back as ``state=``: ALBL)."""
        return "state" in self.options



_REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add a strategy to the registry (a user's own strategy too). Names are unique."""
    if strategy.name in _REGISTRY:
        raise ValueError(f"a strategy named {strategy.name!r} is already registered")
    _REGISTRY[strategy.name] = strategy
    return strategy


KINDS = ("classification", "multi-label", "regression", "segmentation")


def strategies(kind: Optional[str] = None) -> list[str]:
    """Names of the registered strategies, in registration order (of one label kind: KINDS)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return [name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind]


#: The strategy a loop uses when none is named, per label kind.
DEFAULT_STRATEGY = {"classification": "batchbald", "regression": "regression_batchbald"}


def strategies_for(kind: str) -> list[str]:
    """The strategies a loop of this label kind can run: the kind's own, and those that need
    nothing of the model (``random``), which serve every kind."""
    return strategies(kind) + [name for name, spec in _REGISTRY.items() if spec.needs_pool_only and spec.kind != kind]


def get_strategy(name: str) -> Strategy:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"strategy must be one of {', '.join(_REGISTRY)}; got {name!r}")
    return _REGISTRY[name]


def select(
    strategy: str,
    batch_size: int,
    *,
    log_probs_N_K_C=None,
    embeddings_N_D=None,
    seed=None,
    progress: Optional[Callable[[int, int], None]] = None,
    **options,
) -> Selection:
    """Select ``batch_size`` points of the pool with a registered strategy.

    log_probs_N_K_C: log p(y | x_n, w_k) for N pool points, K MC samples, C classes.
    embeddings_N_D: penultimate-layer features (``badge``, ``coreset``, ``kdpp``). Features so
        large (above 2^100) or small (below 2^-100) that squared distances would overflow
        or underflow float64 are rescaled by a power of two first: the picks are unchanged,
        the scores are in the rescaled units and ``info["embedding_scale"]`` holds the factor.
    seed: None, an int or a ``torch.Generator``; the same seed gives the same picks.
    progress: optional ``progress(done, total)`` callback (the library never prints).
    options: strategy-specific options; see ``describe(strategy)``.
    """
    spec = get_strategy(strategy)
    unknown = set(options) - set(spec.options)
    if unknown:
        accepted = ", ".join(sorted(spec.options)) or "none"
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} for strategy {strategy!r}; accepted: {accepted}")
    checked = {name: spec.options[name](value) for name, value in options.items()}
    if spec.needs_log_probs and log_probs_N_K_C is None:
        raise ValueError(f"strategy {strategy!r} needs log_probs_N_K_C (N x K x C log-probabilities)")
    if spec.needs_embeddings and embeddings_N_D is None:
        raise ValueError(f"strategy {strategy!r} needs embeddings_N_D (N x D penultimate features)")
    if spec.pool_input is not None and spec.pool_input not in checked:
        raise ValueError(f"strategy {strategy!r} needs {spec.pool_input}=... (see batchal strategies {strategy})")
    if log_probs_N_K_C is None and embeddings_N_D is None and spec.pool_input is None:
        raise ValueError(f"strategy {strategy!r} needs log_probs_N_K_C or embeddings_N_D to know the pool")
    if log_probs_N_K_C is not None:
        log_probs_N_K_C = check_log_probs(log_probs_N_K_C)
        if strategy in _NEEDS_DISAGREEMENT and samples_identical(log_probs_N_K_C):
            import warnings

            warnings.warn(
                f"{strategy}: the K = {log_probs_N_K_C.shape[1]} samples of log_probs_N_K_C are identical, so every point's "
                "mutual information is zero and the picks are rounding noise. The model's dropout probably samples nothing "
                "(p = 0, functional F.dropout, or dropout never converted: batchal.convert_dropout warns which)",
                SamplesWarning, stacklevel=2)
    if embeddings_N_D is not None:
        embeddings_N_D = check_embeddings(embeddings_N_D)
    if log_probs_N_K_C is not None and embeddings_N_D is not None and log_probs_N_K_C.shape[0] != embeddings_N_D.shape[0]:
        raise ValueError(
            f"log_probs_N_K_C has N = {log_probs_N_K_C.shape[0]} points but embeddings_N_D has "
            f"N = {embeddings_N_D.shape[0]}; both must describe the same pool"
        )
    # Inputs about the labelled set must come from the same layer and classes as the pool's.
    labelled_embeddings, labelled_log_probs = checked.get("labelled_embeddings"), checked.get("labelled_log_probs")
    if labelled_embeddings is not None and embeddings_N_D is not None and labelled_embeddings.shape[1] != embeddings_N_D.shape[1]:
        raise ValueError(
            f"labelled_embeddings has D = {labelled_embeddings.shape[1]} features but embeddings_N_D has "
            f"D = {embeddings_N_D.shape[1]}; both must come from the same layer"
        )
    if labelled_log_probs is not None and log_probs_N_K_C is not None and labelled_log_probs.shape[2] != log_probs_N_K_C.shape[2]:
        raise ValueError(
            f"labelled_log_probs has C = {labelled_log_probs.shape[2]} classes but log_probs_N_K_C has "
            f"C = {log_probs_N_K_C.shape[2]}; both must come from the same model"
        )
    pool_size = (checked[spec.pool_input] if spec.pool_input is not None
                 else log_probs_N_K_C if log_probs_N_K_C is not None else embeddings_N_D).shape[0]
    if spec.pool_input is not None and embeddings_N_D is not None and embeddings_N_D.shape[0] != pool_size:
        raise ValueError(f"{spec.pool_input} has N = {pool_size} points but embeddings_N_D has N = {embeddings_N_D.shape[0]}; "
                         "both must describe the same pool")
    exponent = embedding_exponent(embeddings_N_D, checked.get("labelled_embeddings"))
    scale = embedding_scale(exponent)
    if exponent != 0:
        # Squared distances of such features would overflow (or underflow) float64; a power of
        # two rescales exactly and leaves distance-based picks unchanged.
        embeddings_N_D = rescale(embeddings_N_D, exponent)
        if checked.get("labelled_embeddings") is not None:
            checked["labelled_embeddings"] = rescale(checked["labelled_embeddings"], exponent)
    inputs = Inputs(
        batch_size=check_batch_size(batch_size, pool_size),
        generator=check_random_state(seed),
        log_probs_N_K_C=log_probs_N_K_C,
        embeddings_N_D=embeddings_N_D,
        progress=progress,
        pool=pool_size if spec.pool_input is not None else None,
        embedding_exponent=exponent,
    )
    indices, picked_scores, info = spec.run(inputs, **checked)
    if exponent != 0:
        info = {**info, "embedding_scale": scale, "embedding_scale_log2": exponent}
    return Selection(
        indices=torch.as_tensor(indices, dtype=torch.long).detach().cpu(),
        scores=torch.as_tensor(picked_scores, dtype=torch.float64).detach().cpu(),
        strategy=strategy,
        info=info,
        running_total=spec.running_total,
    )


def describe(strategy: str) -> str:
    """The strategy's documentation: formula, source, score meaning and options with defaults."""
    spec = get_strategy(strategy)
    kind = "" if spec.kind == "classification" else f" [{spec.kind}; its pool: {spec.pool_input or 'embeddings_N_D'}]"
    when = f"\nwhen to use it: {spec.when}" if spec.when else ""
    return f"{spec.name}{kind}: {spec.summary}{when}\noptions: {spec.defaults or 'none'}"


# --- the strategies ----------------------------------------------------------------------


def _top_b_of(scores_N: torch.Tensor, inputs: Inputs):
    """The batch_size highest scores' positions and scores."""
    # Stable descending sort: ties go to the lowest pool position, whatever the platform.
    order = torch.sort(-scores_N, stable=True).indices[: inputs.batch_size]
    if inputs.progress:
        inputs.progress(inputs.batch_size, inputs.batch_size)
    return order, scores_N[order], {}


def _top_b(score_fn):
    def run(inputs: Inputs):
        return _top_b_of(score_fn(inputs.log_probs_N_K_C), inputs)

    return run


def _prefilter(scores_N: torch.Tensor, prefilter: Optional[int], batch_size: int) -> Optional[torch.Tensor]:
    """The pool positions (ascending) of the ``prefilter`` highest scores, the only points to
    compete; None when every point competes."""
    if prefilter is None:
        return None
    if prefilter < batch_size:
        raise ValueError(f"prefilter={prefilter} is smaller than batch_size={batch_size}; expected prefilter >= batch_size")
    if prefilter >= len(scores_N):
        return None
    return torch.sort(scores_N.cpu().topk(prefilter).indices).values  # ties by position


def _optional_positive_int(name: str):
    return lambda v: v if v is None else check_positive_int(v, name)


def _random(inputs: Inputs):
    order = torch.randperm(inputs.pool_size, generator=inputs.generator)[: inputs.batch_size]
    return order, torch.zeros(inputs.batch_size, dtype=torch.float64), {}


def _check_num_samples(K: int, num_samples: int) -> None:
    """Every strategy with a num_samples option: at least one sampled configuration (or draw) per posterior sample."""
    if num_samples < K:
        raise ValueError(f"num_samples={num_samples} is smaller than K={K}; expected num_samples >= K (at least one sampled configuration per posterior sample)")


_DTYPES = {"float64": torch.float64, "float32": torch.float32, torch.float64: torch.float64, torch.float32: torch.float32}


def _check_dtype(value):
    if value not in _DTYPES:
        raise ValueError(f"dtype must be 'float64' or 'float32', got {value!r}")
    return _DTYPES[value]


def _check_bool(name):
    def check(value):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return value

    return check


def _batchbald(
    inputs: Inputs,
    num_samples: int = 40_000,
    lazy: bool = True,
    dtype=torch.float64,
    screen: bool = True,
    memory_bytes: int = _bb.DEFAULT_MEMORY_BYTES,
    prefilter: Optional[int] = None,
    tie_tolerance: float = _bb.TIE_TOLERANCE,
    bound_groups: Optional[int] = _bb.BOUND_GROUPS,
):
    _check_num_samples(inputs.log_probs_N_K_C.shape[1], num_samples)
    log_probs_N_K_C = inputs.log_probs_N_K_C
    # Only the `prefilter` points of highest BALD score compete.
    kept_N = _prefilter(_scores.bald(log_probs_N_K_C), prefilter, inputs.batch_size) if prefilter is not None else None
    if kept_N is not None:
        log_probs_N_K_C = log_probs_N_K_C[kept_N.to(log_probs_N_K_C.device)]
    result = _bb.batchbald(
        log_probs_N_K_C,
        inputs.batch_size,
        num_samples=num_samples,
        generator=inputs.generator,
        dtype=dtype,
        lazy=lazy,
        screen=screen,
        memory_bytes=memory_bytes,
        tie_tolerance=tie_tolerance,
        bound_groups=bound_groups,
        progress=inputs.progress,
    )
    indices = result.indices if kept_N is None else kept_N[torch.as_tensor(result.indices, dtype=torch.long)].tolist()
    return indices, result.scores, {"exact_picks": result.exact_picks, "evaluations": result.evaluations,
                                    "bound_evaluations": result.bound_evaluations, "pick_evaluations": result.pick_evaluations,
                                    "bound_refinements": result.bound_refinements, "gemm_flops": result.gemm_flops}


def _power_bald(inputs: Inputs, beta: float = 1.0):
    bald_N = _scores.bald(inputs.log_probs_N_K_C).cpu().clamp(min=0)
    # Drawing without replacement with probability proportional to BALD^beta; points with
    # BALD = 0 come last, in random order.
    order = _kdpp.gumbel_top_k(_kdpp.power_log_weights(bald_N, beta), inputs.batch_size, inputs.generator)
    return order, bald_N[order], {}


def _badge_run(inputs: Inputs):
    embeddings = _badge.gradient_embeddings(inputs.log_probs_N_K_C, inputs.embeddings_N_D)
    indices, picked = _badge.kmeans_plus_plus(embeddings, inputs.batch_size, inputs.generator)
    return indices, picked, {}


def _coreset_run(inputs: Inputs, labelled_embeddings=None):
    indices, picked = _coreset.k_center_greedy(inputs.embeddings_N_D, inputs.batch_size, labelled_embeddings)
    return indices, picked, {}


def _albl_run(inputs: Inputs, state=None, budget=10_000, labelled_embeddings=None):
    confidence = _scores.least_confidence(inputs.log_probs_N_K_C)
    indices, probabilities, new_state = _albl.albl(confidence, inputs.embeddings_N_D, inputs.batch_size, inputs.generator,
                                                   state, budget, labelled_embeddings)
    return indices, probabilities, {"state": new_state}


def _check_albl_state(value):
    if value is None:
        return None
    if (not isinstance(value, dict) or not isinstance(value.get("log_weights"), list)
            or len(value["log_weights"]) != len(_albl.EXPERTS) or not isinstance(value.get("pending", []), list)):
        raise ValueError(f"state must be None or the dict a previous albl selection returned in info['state'], got {str(value)[:80]!r}")
    return value


def _optional_labelled(check: Callable, dims: int, name: str) -> Callable:
    """A checker for an optional input about the labelled set: None, an empty set, or ``check``ed."""

    def checker(value):
        if value is None:
            return None
        if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == dims and value.shape[0] == 0:
            return torch.as_tensor(value).detach().double()  # an empty labelled set: nothing is labelled yet
        return check(value, name=name)

    return checker


_check_labelled_embeddings = _optional_labelled(check_embeddings, 2, "labelled_embeddings")
_check_labelled_log_probs = _optional_labelled(check_log_probs, 3, "labelled_log_probs")


def _bait_run(inputs: Inputs, labelled_embeddings=None, labelled_log_probs=None, lamb: float = 1.0, oversample: int = 2):
    if (labelled_embeddings is None) != (labelled_log_probs is None):
        raise ValueError("BAIT's labelled Fisher needs both labelled_embeddings and labelled_log_probs (or neither)")
    probs_N_C = _scores.predictive_probs(inputs.log_probs_N_K_C)
    labelled_probs = None
    if labelled_log_probs is not None:
        if len(labelled_log_probs) != len(labelled_embeddings):
            raise ValueError(f"labelled_log_probs has {len(labelled_log_probs)} points but labelled_embeddings has {len(labelled_embeddings)}")
        labelled_probs = _scores.predictive_probs(labelled_log_probs)
    try:
        indices, gains = _bait.bait(probs_N_C, inputs.embeddings_N_D, inputs.batch_size, labelled_probs, labelled_embeddings,
                                    lamb=lamb, oversample=oversample)
    except torch.linalg.LinAlgError as exc:
        raise ValueError(
            f"BAIT's Fisher information is numerically singular ({str(exc).splitlines()[0]}): features are scaled to unit mean "
            "squared norm over the pool, so labelled_embeddings of a very different magnitude than embeddings_N_D (or a "
            f"tiny lamb = {lamb}) leave it ill-conditioned; pass features from the same layer and model, or raise lamb"
        ) from None
    return indices, gains, {}


def _kdpp_run(inputs: Inputs, steps=None):
    embeddings = _badge.gradient_embeddings(inputs.log_probs_N_K_C, inputs.embeddings_N_D)
    indices, picked = _kdpp.sample_kdpp(embeddings, inputs.batch_size, inputs.generator, steps=steps)
    return indices, picked, {}


#: Targets EPIG draws from the pool when none are given.
EPIG_DEFAULT_TARGETS = 256


def _epig_scores(inputs: Inputs, target_log_probs) -> torch.Tensor:
    lp = inputs.log_probs_N_K_C
    if target_log_probs is None:
        # Without a target set, the pool stands for the input distribution: a seeded subsample.
        target_log_probs = lp[torch.randperm(lp.shape[0], generator=inputs.generator)[:EPIG_DEFAULT_TARGETS].to(lp.device)]
    elif target_log_probs.shape[1:] != lp.shape[1:]:
        raise ValueError(f"target_log_probs has shape {tuple(target_log_probs.shape)}; expected T x {lp.shape[1]} x {lp.shape[2]} "
                         "(the same K posterior samples and C classes as log_probs_N_K_C)")
    return _epig.epig(lp, target_log_probs).cpu()


def _epig_run(inputs: Inputs, target_log_probs=None):
    scores_N = _epig_scores(inputs, target_log_probs)
    order = torch.sort(-scores_N, stable=True).indices[: inputs.batch_size]
    return order, scores_N[order], {}


def _power_epig_run(inputs: Inputs, target_log_probs=None, beta: float = 1.0):
    scores_N = _epig_scores(inputs, target_log_probs).clamp(min=0)
    order = _kdpp.gumbel_top_k(_kdpp.power_log_weights(scores_N, beta), inputs.batch_size, inputs.generator)
    return order, scores_N[order], {}


def _check_target_log_probs(value):
    return None if value is None else check_log_probs(value, name="target_log_probs")


def _cluster_margin_run(inputs: Inputs, margin_multiplier: float = 10.0):
    margins_N = _scores.margin(inputs.log_probs_N_K_C)
    return (*_clustering.cluster_margin(margins_N, inputs.embeddings_N_D, inputs.batch_size, inputs.generator, margin_multiplier), {})


def _typiclust_run(inputs: Inputs, labelled_embeddings=None, neighbours: int = 20):
    return (*_clustering.typiclust(inputs.embeddings_N_D, inputs.batch_size, inputs.generator, labelled_embeddings, neighbours), {})


def _check_optional_steps(value):
    return None if value is None else check_positive_int(value, "steps", minimum=0)


_SOURCES = {
    "entropy": "Predictive entropy H[mean_k p_k] (Shannon 1948; Settles 2009). Score: entropy in nats.",
    "bald": "BALD, top-b of I[y; w] = H[mean_k p_k] - mean_k H[p_k] (Houlsby et al. 2011; Gal et al. 2017). Score: BALD in nats.",
    "variation_ratios": "Variation ratios 1 - (votes of the modal class) / K, each MC sample voting for its argmax "
    "(Freeman 1965; Gal et al. 2017; ties within a sample to the lowest class). Score: that value.",
    "mean_std": "Mean STD: mean_c std_k p_kc (Kampffmeyer et al. 2016). Score: that value.",
    "least_confidence": "Least confidence 1 - max_c p_c of the mean prediction (BADGE's 'Conf'). Score: that value.",
    "margin": "Margin -(p_(1) - p_(2)) of the mean prediction (BADGE's 'Marg'). Score: the negated margin.",
}

register(Strategy("random", _random, needs_log_probs=False, needs_embeddings=False,
                  summary="Uniformly random points without replacement. Score: 0.", sharded="random"))
for _name, _fn in _scores.SCORE_FUNCTIONS.items():
    register(Strategy(_name, _top_b(_fn), needs_log_probs=True, needs_embeddings=False, summary=_SOURCES[_name],
                      sharded="top_b", score_column=_name))
register(Strategy(
    "batchbald", _batchbald, needs_log_probs=True, needs_embeddings=False, running_total=True, sharded="prefiltered_batchbald",
    summary=(_bb.__doc__ or "").strip().splitlines()[0]
    + " Exact joint entropies while C^n <= num_samples, importance-sampled after; lazy greedy by default. "
    "prefilter=m lets only the m points of highest BALD score compete (large pools). "
    "Once the batch's information is within tie_tolerance of its ceiling log K, the remaining candidates count as tied. "
    "Score: the batch's mutual information I(y_1..y_n; w) after pick n (nats).",
    options={
        "num_samples": lambda v: check_positive_int(v, "num_samples"),
        "lazy": _check_bool("lazy"),
        "dtype": _check_dtype,
        "screen": _check_bool("screen"),
        "memory_bytes": lambda v: check_positive_int(v, "memory_bytes"),
        "prefilter": _optional_positive_int("prefilter"),
        "tie_tolerance": lambda v: check_positive_float(v, "tie_tolerance", allow_zero=True),
        "bound_groups": _optional_positive_int("bound_groups"),
    },
))
register(Strategy(
    "power_bald", _power_bald, needs_log_probs=True, needs_embeddings=False, sharded="power", score_column="bald",
    summary="PowerBALD (Kirsch et al. 2023, stochastic batch acquisition): b points drawn without replacement "
    "with probability proportional to BALD^beta (Gumbel-top-b). Score: the pick's BALD.",
    options={"beta": lambda v: check_positive_float(v, "beta", allow_zero=True)},
))
register(Strategy(
    "badge", _badge_run, needs_log_probs=True, needs_embeddings=True, sharded="kmeans_pp",
    summary="BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings (p - e_argmax p) (outer) h, "
    "never materialised. Score: squared distance to the nearest earlier pick (squared norm for the first).",
))
register(Strategy(
    "coreset", _coreset_run, needs_log_probs=False, needs_embeddings=True, sharded="k_center",
    summary="Coreset (Sener & Savarese 2018): greedy furthest-first (k-center) on features, seeded with "
    "labelled_embeddings when given. Score: distance to the nearest centre when picked.",
    options={"labelled_embeddings": _check_labelled_embeddings},
))
register(Strategy(
    "epig", _epig_run, needs_log_probs=True, needs_embeddings=False,
    summary=" ".join((_epig.__doc__ or "").strip().split("\n\n")[0].split()) + " Top-b of EPIG(x) = E_x* I(y; y* | x, x*), the mean over "
    "target_log_probs (T x K x C, the same K samples), by default a seeded subsample of 256 pool points. Score: EPIG in nats.",
    options={"target_log_probs": _check_target_log_probs},
))
register(Strategy(
    "power_epig", _power_epig_run, needs_log_probs=True, needs_embeddings=False,
    summary="Batch EPIG by stochastic acquisition (as EPIG's batch experiments, Kirsch et al. 2023): b points drawn without "
    "replacement with probability proportional to EPIG^beta (Gumbel-top-b). Score: the pick's EPIG.",
    options={"target_log_probs": _check_target_log_probs, "beta": lambda v: check_positive_float(v, "beta", allow_zero=True)},
))
register(Strategy(
    "cluster_margin", _cluster_margin_run, needs_log_probs=True, needs_embeddings=True,
    summary="Cluster-Margin (Citovsky et al. 2021): the margin_multiplier * b smallest-margin points, clustered (average-linkage "
    "HAC on the features), smallest cluster first, one random point per cluster round-robin. Score: the pick's negated margin.",
    options={"margin_multiplier": lambda v: max(1.0, check_positive_float(v, "margin_multiplier"))},
))
register(Strategy(
    "typiclust", _typiclust_run, needs_log_probs=False, needs_embeddings=True,
    summary="TypiClust (Hacohen et al. 2022), for the cold start: k-means with |labelled| + b clusters, the most typical point "
    "(1 / mean distance to its k = 20 nearest neighbours) of each of the b largest clusters without a labelled point. "
    "Score: the pick's typicality.",
    options={"labelled_embeddings": _check_labelled_embeddings, "neighbours": lambda v: check_positive_int(v, "neighbours")},
))
register(Strategy(
    "bait", _bait_run, needs_log_probs=True, needs_embeddings=True,
    summary="BAIT (Ash et al. 2021): minimises tr((M + lamb I)^-1 F) with last-layer Fisher information "
    "(diag(p) - p p^T) kron h h^T, F over the pool, M over the labelled set (labelled_embeddings and labelled_log_probs) "
    "and the batch; oversample * b forward greedy picks, then backward pruning to b. Score: the pick's forward decrease.",
    options={"labelled_embeddings": _check_labelled_embeddings, "labelled_log_probs": _check_labelled_log_probs,
             "lamb": lambda v: check_positive_float(v, "lamb"), "oversample": lambda v: check_positive_int(v, "oversample")},
))
register(Strategy(
    "kdpp", _kdpp_run, needs_log_probs=True, needs_embeddings=True,
    summary="k-DPP with a linear kernel on gradient embeddings (BADGE's baseline), swap-chain MCMC with "
    "ceil(5 k ln k) steps. Score: the pick's squared gradient-embedding norm.",
    options={"steps": _check_optional_steps},
))
register(Strategy(
    "albl", _albl_run, needs_log_probs=True, needs_embeddings=True,
    summary="ALBL (Hsu & Lin 2015, BADGE's baseline): an EXP4.P bandit over Coreset, Conf and uniform experts, rewarded by "
    "the importance-weighted accuracy on its queried points; stateful: pass the state of info['state'] back, updated "
    "with batchal.acquisition.albl.update(state, reward, ...) once the model has retrained. Score: the pick's query probability.",
    options={"state": _check_albl_state, "budget": lambda v: check_positive_int(v, "budget"),
             "labelled_embeddings": _check_labelled_embeddings},
))


# --- label kinds beyond single-label classification ---------------------------------------
# Each takes its pool as a named input (Strategy.pool_input), checked with its shape named.


def _multilabel_bald_run(inputs: Inputs, log_probs_N_K_L=None):
    return _top_b_of(_multilabel.multilabel_bald(log_probs_N_K_L), inputs)


def _multilabel_batchbald_run(inputs: Inputs, log_probs_N_K_L=None, num_samples: int = 40_000, max_configurations: int = 256,
                              memory_bytes: int = _bb.DEFAULT_MEMORY_BYTES, prefilter: Optional[int] = None):
    # Only the `prefilter` points of highest multi-label BALD compete.
    kept_N = _prefilter(_multilabel.multilabel_bald(log_probs_N_K_L), prefilter, inputs.batch_size) if prefilter is not None else None
    if kept_N is not None:
        log_probs_N_K_L = log_probs_N_K_L[kept_N.to(log_probs_N_K_L.device)]
    N, K, L = log_probs_N_K_L.shape
    _check_num_samples(K, num_samples)
    if 2**L <= max_configurations:
        # The encoding (N x K x 2^L float64, its last product step twice, and the binary N x K x L x 2)
        # comes out of memory_bytes; batchbald gets the rest.
        encoding = N * K * (2 * 2**L + 2 * L) * 8
        if encoding >= memory_bytes:
            raise ValueError(f"the product encoding would hold N x K x 2^L = {N} x {K} x {2**L} float64 values "
                             f"({math.ceil(encoding / 2**20)} MiB with its temporaries) above memory_bytes = {memory_bytes / 2**20:.0f} MiB; "
                             "pass prefilter=m (the m points of highest multi-label BALD compete) or raise memory_bytes")
        binary = _multilabel.binary_log_probs(log_probs_N_K_L)  # N x K x L x 2
        result = _bb.batchbald(_factorised.product_log_probs(binary), inputs.batch_size, num_samples=num_samples,
                               generator=inputs.generator, memory_bytes=memory_bytes - encoding, progress=inputs.progress)
        indices, scores, info = result.indices, result.scores, {"estimator": "product", "exact_picks": result.exact_picks}
    else:
        # Each item's binary log-probabilities (N x K x L x 2 in float64) made when it is drawn, never the pool's at once.
        items = lambda start, stop: _multilabel.binary_log_probs(log_probs_N_K_L[start:stop])  # noqa: E731
        indices, scores, info = _factorised.sampled_batchbald(items, inputs.batch_size, inputs.generator, num_samples=min(num_samples, 4096),
                                                              memory_bytes=memory_bytes, pool_size=N)
    if kept_N is not None:
        indices = kept_N[torch.as_tensor(indices, dtype=torch.long)].tolist()
    return indices, scores, info


def _multilabel_badge_run(inputs: Inputs, log_probs_N_K_L=None):
    embeddings = _badge.GradientEmbeddings(a_N_C=_multilabel.residuals(log_probs_N_K_L), h_N_D=inputs.embeddings_N_D.double())
    indices, picked = _badge.kmeans_plus_plus(embeddings, inputs.batch_size, inputs.generator)
    return indices, picked, {}


def _check_estimator(value):
    if value not in ("moment", "sampled"):
        raise ValueError(f"estimator must be 'moment' or 'sampled', got {value!r}")
    return value


def _regression_bald_run(inputs: Inputs, mean_N_K=None, var_N_K=None, noise=None, estimator: str = "moment", num_samples: int = 4096):
    pool = _regression.check_regression(mean_N_K, var_N_K, noise)
    if estimator == "sampled":
        _check_num_samples(pool.centred_N_K.shape[1], num_samples)  # at least one draw per component
    scores_N = _regression.moment_bald(pool) if estimator == "moment" else _regression.sampled_bald(pool, num_samples, inputs.generator)
    return _top_b_of(scores_N, inputs)


def _regression_batchbald_run(inputs: Inputs, mean_N_K=None, var_N_K=None, noise=None):
    pool = _regression.check_regression(mean_N_K, var_N_K, noise)
    picks, gains, info = _regression.gaussian_joint(pool, inputs.batch_size, inputs.generator)
    return picks, torch.tensor(gains, dtype=torch.float64).cumsum(0), info


def _regression_maxdet_run(inputs: Inputs, noise: float = 1.0, labelled_embeddings=None):
    # select() may have rescaled the features by 2^e (Inputs.embedding_exponent): the noise, a
    # variance in the features' units, is rescaled by 2^(2e) with them, in logs.
    log_noise = math.log(noise) + 2 * inputs.embedding_exponent * math.log(2.0)
    picks, gains, info = _regression.maxdet(inputs.embeddings_N_D, noise, inputs.batch_size, labelled_embeddings,
                                            generator=inputs.generator, log_noise=log_noise)
    return picks, torch.tensor(gains, dtype=torch.float64).cumsum(0), info


def _check_reduction(value):
    if value not in ("mean", "top"):
        raise ValueError(f"reduction must be 'mean' or 'top', got {value!r}")
    return value


def _check_fraction(value):
    value = as_number(value)
    if not is_real_number(value) or not 0 < value <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {value!r}")
    return float(value)


def _segmentation_scores(score: str):
    def run(inputs: Inputs, log_probs_N_K_C_H_W=None, reduction: str = "mean", top_fraction: float = 0.1):
        per_pixel = _dense.per_pixel_scores(log_probs_N_K_C_H_W, score)
        return _top_b_of(_dense.reduce_pixels(per_pixel, reduction, top_fraction), inputs)

    return run


def _segmentation_batchbald_run(inputs: Inputs, log_probs_N_K_C_H_W=None, pixels: Optional[int] = 64, num_samples: int = 1024,
                                memory_bytes: int = _bb.DEFAULT_MEMORY_BYTES):
    _check_num_samples(log_probs_N_K_C_H_W.shape[1], num_samples)
    spatial = tuple(log_probs_N_K_C_H_W.shape[3:])
    chosen = _factorised.choose_pixels(spatial, pixels, inputs.generator)
    chosen_device = chosen.to(log_probs_N_K_C_H_W.device)
    # Each image's chosen pixels (n x K x P x C) gathered when it is drawn, never the pool's at once.
    items = lambda start, stop: _dense.pixels_last(log_probs_N_K_C_H_W[start:stop])[:, :, chosen_device]  # noqa: E731
    picks, scores, info = _factorised.sampled_batchbald(items, inputs.batch_size, inputs.generator, num_samples, memory_bytes,
                                                        pool_size=log_probs_N_K_C_H_W.shape[0])
    return picks, scores, {**info, "pixels": chosen.tolist()}


_positive_int = lambda name: (lambda v: check_positive_int(v, name))  # noqa: E731
register(Strategy(
    "multilabel_bald", _multilabel_bald_run, needs_log_probs=False, needs_embeddings=False, pool_input="log_probs_N_K_L", kind="multi-label",
    summary="Multi-label BALD: the per-label binary BALD summed over the L labels (log_probs_N_K_L: log sigmoid outputs). "
    "Score: that sum (nats).",
    options={"log_probs_N_K_L": _multilabel.check_multilabel_log_probs},
))
register(Strategy(
    "multilabel_batchbald", _multilabel_batchbald_run, needs_log_probs=False, needs_embeddings=False, pool_input="log_probs_N_K_L",
    kind="multi-label", running_total=True,
    summary="Multi-label BatchBALD: I over the batch's L x b binary labels; exact by the product encoding (2^L values per item) "
    "through batchbald while 2^L <= max_configurations, the sampled joint after. Score: the batch's I after pick n (nats).",
    options={"log_probs_N_K_L": _multilabel.check_multilabel_log_probs, "num_samples": _positive_int("num_samples"),
             "max_configurations": _positive_int("max_configurations"), "memory_bytes": _positive_int("memory_bytes"),
             "prefilter": _optional_positive_int("prefilter")},
))
register(Strategy(
    "multilabel_badge", _multilabel_badge_run, needs_log_probs=False, needs_embeddings=True, pool_input="log_probs_N_K_L",
    kind="multi-label",
    summary="BADGE for a sigmoid head: k-means++ on the binary cross-entropy gradients (p - [p >= 1/2]) (outer) h. "
    "Score: squared distance to the nearest earlier pick.",
    options={"log_probs_N_K_L": _multilabel.check_multilabel_log_probs},
))
# Checked before the batch size is compared with the pool (an empty pool is named by its argument);
# check_regression then checks them together (one noise, shapes alike).
_regression_options = {"mean_N_K": lambda v: check_finite(v, "mean_N_K", 2, "N x K: predictive means of K posterior samples"),
                       "var_N_K": lambda v: None if v is None else check_finite(v, "var_N_K", 2, "N x K: predictive variances", positive=True),
                       "noise": lambda v: None if v is None else check_positive_float(v, "noise")}
register(Strategy(
    "regression_bald", _regression_bald_run, needs_log_probs=False, needs_embeddings=False, pool_input="mean_N_K", kind="regression",
    summary="Regression BALD: I(y; w) under the K-component Gaussian mixture (mean_N_K with var_N_K or noise), by the "
    "moment-matched upper bound (estimator='moment') or Monte Carlo (estimator='sampled'). Score: that estimate (nats).",
    options={**_regression_options, "estimator": _check_estimator, "num_samples": _positive_int("num_samples")},
))
register(Strategy(
    "regression_batchbald", _regression_batchbald_run, needs_log_probs=False, needs_embeddings=False, pool_input="mean_N_K",
    kind="regression", running_total=True,
    summary="Regression BatchBALD, the Gaussian joint: greedy max of 1/2 log det(Sigma_B + diag(s_B)) - 1/2 sum log s_B, Sigma the "
    "K samples' covariance of the means, s the mean noise variance; exact greedy by rank-one updates. "
    "Score: the batch's information after pick n (nats).",
    options=_regression_options,
))
register(Strategy(
    "regression_maxdet", _regression_maxdet_run, needs_log_probs=False, needs_embeddings=True, kind="regression", running_total=True,
    summary="MaxDet on last-layer features (bmdal_reg's 'maxdet' with the 'll' kernel): greedy max of "
    "log det(Phi_B Phi_B^T + noise I), conditioned on labelled_embeddings when given (bmdal_reg's TP-mode). "
    "Score: the batch's 1/2 log det gain over the labelled set after pick n (nats).",
    options={"noise": lambda v: check_positive_float(v, "noise"), "labelled_embeddings": _check_labelled_embeddings},
))
for _score in ("bald", "entropy"):
    register(Strategy(
        f"segmentation_{_score}", _segmentation_scores(_score), needs_log_probs=False, needs_embeddings=False,
        pool_input="log_probs_N_K_C_H_W", kind="segmentation",
        summary=f"Segmentation: the per-pixel {'BALD' if _score == 'bald' else 'predictive entropy'} reduced over the pixels "
        "(reduction='mean', or 'top': the mean of the top_fraction highest). Score: that value.",
        options={"log_probs_N_K_C_H_W": _dense.check_dense_log_probs, "reduction": _check_reduction, "top_fraction": _check_fraction},
    ))
register(Strategy(
    "segmentation_batchbald", _segmentation_batchbald_run, needs_log_probs=False, needs_embeddings=False,
    pool_input="log_probs_N_K_C_H_W", kind="segmentation", running_total=True,
    summary="Segmentation BatchBALD: images as factorised items of `pixels` positions drawn once (the same for every image), "
    "the sampled joint over the batch's pixels; memory_bytes caps all it holds above the input (at least the N x S x K float64 draws). Score: the estimated I after pick n.",
    options={"log_probs_N_K_C_H_W": _dense.check_dense_log_probs,
             "pixels": _optional_positive_int("pixels"),
             "num_samples": _positive_int("num_samples"), "memory_bytes": _positive_int("memory_bytes")},
))


# --- when to use each built-in strategy (its documentation page says this) ---------------------------

_WHEN = {
    "random": "The baseline every other strategy must beat (`batchal compare` always runs it), and the safe choice when nothing is known yet about the data.",
    "entropy": "A cheap per-point uncertainty for small batches; with large batches it picks near-duplicates, and its picks often fall below random on imbalanced or noisy data.",
    "bald": "Epistemic uncertainty from K posterior samples when batches are small (b of a few); with larger batches it picks redundant points: use batchbald.",
    "variation_ratios": "A vote-based uncertainty from K samples (Gal et al. 2017's baseline); for reproducing that paper.",
    "mean_std": "The mean standard deviation of the class probabilities over K samples (Kampffmeyer et al.); for reproducing BatchBALD's baselines.",
    "least_confidence": "A cheap single-model uncertainty (BADGE's Conf baseline); top-b, so small batches.",
    "margin": "Often the strongest cheap baseline (BADGE's Marg; Bahri et al. 2022 on tabular data); try it first when compute is tight, with b small relative to the pool.",
    "batchbald": "Batches of a few to a few hundred with a Bayesian model (MC dropout or an ensemble) whose K samples disagree: it avoids redundant picks where BALD does not (Repeated MNIST).",
    "power_bald": "Large batches at BALD's cost: stochastic acquisition draws b points with probability proportional to BALD^beta, which spreads the batch without BatchBALD's joint.",
    "badge": "Large batches with any network that has a last layer, no posterior needed: uncertainty and diversity at once through gradient embeddings (Ash et al. 2020).",
    "coreset": "Diversity alone (k-center greedy on features): large batches where uncertainty estimates are poor, or the first rounds.",
    "epig": "When what matters is accuracy on a known target distribution (pass target_log_probs): it ignores uncertainty that does not bear on the targets.",
    "power_epig": "EPIG for large batches: stochastic acquisition on EPIG^beta.",
    "cluster_margin": "Very large batches (thousands) at margin's cost, spread over clusters of the features (Citovsky et al. 2021).",
    "typiclust": "The cold start, with very few labels: typical points of uncovered clusters before uncertainty is worth anything.",
    "bait": "Small to moderate C x D (seconds for C D in the low thousands) when the Fisher-information objective is wanted; expensive beyond.",
    "kdpp": "BADGE's sampling baseline: a k-DPP on the same gradient embeddings; for reproducing BADGE's Figure 1.",
    "albl": "BADGE's ALBL baseline: a bandit choosing among Coreset, Conf and random each round; stateful.",
    "multilabel_bald": "Multi-label classification (sigmoid heads), small batches: the per-label BALD summed.",
    "multilabel_batchbald": "Multi-label classification with larger batches: the joint information over the batch's labels avoids redundant items.",
    "multilabel_badge": "Multi-label classification, large batches, no posterior needed: BADGE on the binary cross-entropy gradients.",
    "regression_bald": "Regression with K posterior samples, small batches: the information about w of one target.",
    "regression_batchbald": "Regression with K posterior samples and larger batches: the Gaussian joint avoids redundant points; stops with a random fill once the samples' rank is used up.",
    "regression_maxdet": "Regression with last-layer features and no posterior samples (bmdal_reg's MaxDet): diverse, informative batches; labelled_embeddings conditions on what is known.",
    "segmentation_bald": "Segmentation, small batches: per-pixel BALD reduced over the image (mean, or the top fraction for small objects).",
    "segmentation_entropy": "Segmentation without a posterior: per-pixel predictive entropy reduced over the image.",
    "segmentation_batchbald": "Segmentation with larger batches: images as items of sampled pixels, joint information over the batch; memory_bytes caps its memory.",
}
for _name, _text in _WHEN.items():
    _REGISTRY[_name] = replace(_REGISTRY[_name], when=_text)
