"""Weight averaging of CoarseNet checkpoints (``train-cli average``).

Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018): the end points of training runs that restart from one another with a
warm-up then a cosine decay (the project's legs, ``--init``) lie in one basin, and the paper found
their mean flatter and better at generalising than any of them (measured on the legs:
docs/experiments.md, "Weight averaging of the legs"). The BatchNorm running statistics of averaged weights are not
the average of the runs' statistics, so they are recomputed on training batches afterwards
(:func:`recompute_batchnorm`): the networks' running means and variances are reset and replaced by
the plain average over ``batches`` forward passes in training mode, without gradients, on the
shards augmented as the last checkpoint's job config augments them.

What must agree between the checkpoints (else :class:`train.checkpoint.CheckpointError` naming the
file): the task (``coarse``), the morphable model (fingerprint) and the network (every
hyperparameter of its ``task_state`` but the normalisation statistics, every tensor's name and
shape; each checkpoint once). The parameter normalisation statistics are computed by each run
from its own shards and differ by a few percent between legs (:data:`STATS_WARN`); the average
keeps the **last** checkpoint's, with its config, step and task state.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Iterable, Sequence

import torch

from .checkpoint import CheckpointError
from .coarse_net import HYPERPARAMETER_DEFAULTS
from .inference import load_checkpoint_and_model

__all__ = ["average_checkpoints", "recompute_batchnorm", "batchnorm_layers"]

log = logging.getLogger(__name__)

STATS_WARN = 0.25
"""A warning names a checkpoint whose parameter normalisation differs from the last one's by more
than this (a mean's shift in standard deviations, a standard deviation's relative change; the
project's legs, each computing it from its own shards, differ by 5-8 %, in the SH lighting)."""


def _differences(a: dict[str, Any], b: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    keys = sorted((set(a) | set(b)) - set(skip))
    return [k for k in keys if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)]


def _stats_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, float]:
    """``(name, value)`` of the largest difference between two parameter normalisations
    (:meth:`train.params.ParamStats.to_dict`: ``<x>_mean`` / ``<x>_std`` pairs): a mean's shift in
    units of ``b``'s standard deviation, a standard deviation's relative change."""
    worst = ("", 0.0)
    for k in sorted(set(a) & set(b)):
        x, y = torch.as_tensor(a[k], dtype=torch.float64), torch.as_tensor(b[k], dtype=torch.float64)
        std = k[:-5] + "_std" if k.endswith("_mean") else k
        if x.shape != y.shape or not x.numel() or std not in b:
            continue
        scale = torch.as_tensor(b[std], dtype=torch.float64).abs().clamp_min(1e-12)
        if scale.shape != y.shape:
            continue
        rel = float(((x - y).abs() / scale).max())
        if rel > worst[1]:
            worst = (k, rel)
    return worst


def average_checkpoints(paths: Sequence[str | os.PathLike], model=None) -> tuple[dict[str, Any], Any]:
    """``(checkpoint, morphable model)``: the inference checkpoint of the last of ``paths`` (a run's
    ``.pt`` or exported ``.safetensors``) with its weights replaced by the mean over ``paths`` of
    every floating-point tensor (summed in float64, in the order given; integer buffers such as
    BatchNorm's batch counters are the last checkpoint's). ``model``: the morphable model, loaded
    from the first checkpoint's config when None. Needs two or more paths."""
    paths = [str(p) for p in paths]
    if len(paths) < 2:
        raise ValueError(f"average needs two or more checkpoints, got {len(paths)}")
    cks = []
    for p in paths:
        ck, model = load_checkpoint_and_model(p, model)
        cks.append(ck)
    seen: dict[str, str] = {}
    for p in paths:
        real = os.path.realpath(p)
        if real in seen:
            raise CheckpointError(f"checkpoint {p} is given twice (as {seen[real]}): each run counts once")
        seen[real] = p
    last, last_path = cks[-1], paths[-1]
    arch = {**HYPERPARAMETER_DEFAULTS, **last["task_state"]}
    for p, ck in zip(paths[:-1], cks[:-1]):
        diff = _differences({**HYPERPARAMETER_DEFAULTS, **ck["task_state"]}, arch, skip=("stats",))
        if diff:
            raise CheckpointError(f"checkpoint {p}: its network differs from {last_path}'s in {', '.join(diff)}; "
                                  "only runs of one architecture can be averaged")
        own, ref = ck["model"], last["model"]
        if own.keys() != ref.keys():
            only = [f"{k} (only in {p if k in own else last_path})" for k in sorted(set(own) ^ set(ref))[:3]]
            raise CheckpointError(f"checkpoint {p}: its tensors differ from {last_path}'s: {', '.join(only)}")
        name, rel = _stats_difference(ck["task_state"].get("stats", {}), last["task_state"].get("stats", {}))
        if rel > STATS_WARN:
            log.warning("checkpoint %s: its parameter normalisation differs from %s's by %.2f (%s); the average "
                        "keeps %s's, which suits weights trained on similar shards only", p, last_path, rel,
                        name, last_path)
        for k, v in own.items():
            if tuple(v.shape) != tuple(ref[k].shape):
                raise CheckpointError(f"checkpoint {p}: tensor {k} is {tuple(v.shape)}, "
                                      f"{tuple(ref[k].shape)} in {last_path}")
    weights = {}
    for k, v in last["model"].items():
        if torch.is_floating_point(v):
            total = torch.zeros(v.shape, dtype=torch.float64)
            for ck in cks:
                total += ck["model"][k].double()
            weights[k] = (total / len(cks)).to(v.dtype)
        else:
            weights[k] = v.clone()
    out = dict(last)
    out["model"] = weights
    log.info("averaged %d checkpoints (%s); config, task state and step of %s", len(paths), ", ".join(paths),
             last_path)
    return out, model


def batchnorm_layers(net: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``net`` that keep running statistics."""
    return [m for m in net.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batchnorm(net: torch.nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any],
                        progress: Callable[[int], None] | None = None) -> int:
    """Replace the running statistics of every BatchNorm layer of ``net`` by their plain average
    over ``batches`` (``forward(batch)`` runs the network on one, in training mode, without
    gradients). Returns the number of batches used (0: no BatchNorm layer, nothing run). The
    network is left in eval mode, its layers' momentum restored."""
    layers = batchnorm_layers(net)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the plain mean over the batches
    was_training = net.training
    net.train()
    n = 0
    try:
        for batch in batches:
            forward(batch)
            n += 1
            if progress is not None:
                progress(1)
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        net.train(was_training)
    if n == 0:
        raise ValueError("no batch to recompute the BatchNorm statistics on")
    net.eval()
    return n
