"""Connecting to a Ray cluster, and what every worker does first."""

from __future__ import annotations

import torch

RAY_EXTRA = "pip install -c constraints.txt -e '.[ray]'"


def require_ray():
    """The ``ray`` module, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"running on a Ray cluster needs the ray extra: {RAY_EXTRA}") from None
    return ray


def connect(address: str):
    """Join the cluster at ``address`` ('local' starts one on this machine; 'auto' finds a running
    one). A process already connected (a test's cluster, say) stays connected."""
    ray = require_ray()
    if ray.is_initialized():
        quiet_ray_data(ray)
        return ray
    if not isinstance(address, str) or not address:
        raise ValueError(f"--ray must be 'local', 'auto' or a cluster address HOST:PORT, got {address!r}")
    if address not in ("local", "auto"):
        _check_reachable(address)
    import logging

    try:
        # "local" is Ray's own word for a new local instance: address=None would first join an
        # existing cluster ($RAY_ADDRESS or the last one started on this machine).
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        raise ValueError(f"--ray {address}: cannot reach a Ray cluster there ({type(exc).__name__}: {exc}); "
                         "start one with 'ray start --head' or use --ray local") from None
    quiet_ray_data(ray)
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A quick TCP check, so that a wrong address fails in seconds with one line instead of Ray
    retrying for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray must be 'local', 'auto' or a cluster address HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ValueError(f"--ray {address}: cannot reach a Ray cluster there ({exc}); start one with 'ray start --head' "
                         "(it prints the address) or use --ray local") from None


def quiet_ray_data(ray) -> None:
    """batchal reports progress through its own callbacks; Ray Data's bars and INFO lines off."""
    import logging

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def use_threads(num_cpus) -> None:
    """torch threads = the CPUs Ray gave this worker (at least 1): more threads than cores slows
    2-thread operations 10-25x when several workers share a node. The one thread policy of
    ``batchal.threads`` applies it."""
    from batchal.threads import use_threads as apply

    apply(max(1, int(num_cpus or 1)))
