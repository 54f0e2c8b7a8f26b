"""What several commands parse alike: comma-separated lists, optional extras."""

from __future__ import annotations

def split_list(text: str, flag: str, convert=str) -> list:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    kind = {int: "integers", float: "numbers"}.get(convert, "names")
    try:
        values = [convert(t) for t in items]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated {kind}, e.g. {flag} {EXAMPLES[flag]}; got {text!r}") from None
    if not values:
        raise ValueError(f"{flag}: expected comma-separated {kind}, e.g. {flag} {EXAMPLES[flag]}; got {text!r}")
    return values



EXAMPLES = {"--strategy": "batchbald,bald,random", "--seeds": "0,1,2", "--thresholds": "0.9,0.95", "--classes": "cat,dog",
            "--batch-size": "10,40", "--input-shape": "1,28,28", "--targets": "0.9,0.95"}



def needs_pyarrow(command: str) -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise ValueError(f"batchal {command} reads and writes Parquet, which needs pyarrow (Ray is not needed in-process): "
                         "pip install -c constraints.txt -e '.[score]'")



def train_config(args):
    """``batchal run``'s training protocol, with the epochs a command's flags change (None: the default)."""
    from batchal.training import TrainConfig

    given = {name: getattr(args, name, None) for name in ("epoch_samples", "max_epochs")}
    return TrainConfig(**{name: value for name, value in given.items() if value is not None})
