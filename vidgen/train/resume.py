"""What changed between a checkpoint's config and the config a run resumes with.

Resuming is exact only with the same settings. Some changes are routine (more steps, another
checkpoint interval, more loader workers) and pass silently. Changes that alter the networks
(their tensor names or shapes) make the checkpoint unusable: resuming is refused with the keys
that changed. Everything else (a learning rate, a loss weight, the batch) is accepted and
reported, since the run continues but is no longer the run it was.
"""

from __future__ import annotations

from typing import Any

from safetensors.torch import safe_open
from torch import nn

from vidgen.train.sidecar import CheckpointError

# Keys that say how long and how visibly a run goes on, not what it computes.
ROUTINE = frozenset({
    "engine.steps", "engine.checkpoint_every", "engine.keep_last", "engine.milestone_every",
    "engine.log_every", "engine.sample_every", "engine.workers", "engine.out_dir", "engine.device",
    "engine.max_nonfinite",
})


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` of every key that differs (missing: None), sorted."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def is_learning_rate(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last == "lr" or last.startswith("lr_") or last.endswith("_lr")


def _describe(changes: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    shown = [f"{k} {a!r} -> {b!r}" for k, a, b in changes[:limit]]
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(shown) + more


def network_mismatches(networks: dict[str, nn.Module], file: str) -> list[str]:
    """Tensors whose name or shape differ between ``networks`` and the checkpoint file
    ``networks.safetensors`` (read from its header only)."""
    with safe_open(file, framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    out = []
    for name, net in networks.items():
        own = {f"{name}/{k}": tuple(v.shape) for k, v in net.state_dict().items()}
        theirs = {k: s for k, s in stored.items() if k.startswith(name + "/")}
        if not theirs:  # a network the checkpoint lacks altogether: loading says so (Trainer.load)
            continue
        for k in sorted(set(own) | set(theirs)):
            if own.get(k) != theirs.get(k):
                out.append(f"{k}: {list(theirs[k]) if k in theirs else 'absent'} in the checkpoint, "
                           f"{list(own[k]) if k in own else 'absent'} now")
    return out


def check_resume(checkpoint, config: dict[str, Any], networks: dict[str, nn.Module]) -> list[str]:
    """Refuse to resume ``checkpoint`` (a :class:`vidgen.train.checkpoint.Checkpoint`) into
    ``networks`` built from ``config`` when they do not fit; otherwise return the lines to log
    about settings that changed (empty when nothing but routine keys did)."""
    changes = [c for c in config_changes(checkpoint.config, config) if c[0] not in ROUTINE]
    mismatched = network_mismatches(networks, str(checkpoint.path / "networks.safetensors"))
    if mismatched:
        keys = f"the config keys that changed: {_describe(changes)}" if changes else \
            "no config key changed, so the checkpoint does not match its own config"
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: the networks differ from the checkpoint's "
            f"({len(mismatched)} tensors, e.g. {mismatched[0]}); {keys}. Resuming would not continue "
            "the same run; restore those keys, or start a new run without --resume")
    lines = []
    rates = [c for c in changes if is_learning_rate(c[0])]
    if rates:
        lines.append(f"learning rate changed on resume at step {checkpoint.step}: {_describe(rates)}")
    others = [c for c in changes if not is_learning_rate(c[0])]
    if others:
        lines.append(f"settings changed on resume at step {checkpoint.step}: {_describe(others)}; "
                     "the run continues but is not an exact continuation")
    return lines
