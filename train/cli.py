"""``train-cli``: train CoarseNet on synthetic shards (phase 1), evaluate checkpoints, export
inference weights (safetensors) and convert old pickled checkpoints.

Every ``coarse`` flag maps 1:1 to a field of :class:`train.config.CoarseConfig`; bad values are
reported with the flag's name. Multi-process: ``torchrun --nproc-per-node N $(which train-cli)
coarse ...`` (DDP; gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import json
import logging
import os

import click

from .config import CoarseConfig

__all__ = ["main"]


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e)) from e


@click.group()
@click.option("-v", "--verbose", count=True, help="-v: info logs, -vv: debug logs.")
def main(verbose: int) -> None:
    """Train and evaluate the detailface networks."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=level, format=f"%(asctime)s [rank {rank}] %(name)s %(levelname)s: %(message)s")


@main.command()
@click.option("--data", required=True, type=click.Path(), help="Directory of training shards (shard-*.h5).")
@click.option("--out", required=True, type=click.Path(), help="Run directory (checkpoints, logs, curves).")
@click.option("--model", default=None, type=click.Path(), help="Morphable model file; default: the built-in model.")
@click.option("--val-data", default=None, type=click.Path(), help="Directory of validation shards.")
@click.option("--iters", default=4, show_default=True, help="CoarseNet iterations per image.")
@click.option("--size", default=224, show_default=True, help="Network input size (pixels).")
@click.option("--batch-size", default=32, show_default=True, help="Images per step per process.")
@click.option("--steps", default=None, type=int, help="Optimisation steps (default 10000; exclusive with --epochs).")
@click.option("--epochs", default=None, type=float, help="Passes over the training samples (per process).")
@click.option("--lr", default=1e-3, show_default=True, help="Peak AdamW learning rate.")
@click.option("--weight-decay", default=0.01, show_default=True, help="AdamW weight decay (weights only).")
@click.option("--warmup", default=0.03, show_default=True, help="Warm-up fraction of the steps (then cosine).")
@click.option("--min-lr", default=0.01, show_default=True, help="Final LR as a fraction of --lr.")
@click.option("--grad-clip", default=1.0, show_default=True, help="Gradient-norm clip (0 = off).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast on CUDA.")
@click.option("--threads", default=0, show_default=True, help="torch CPU threads per process (0 = default).")
@click.option("--workers", default=None, type=int, help="DataLoader workers per process [default: min(8, CPUs - 1)].")
@click.option("--seed", default=0, show_default=True)
@click.option("--width-mult", default=1.0, show_default=True, help="Scale all network widths.")
@click.option("--n-id", default=80, show_default=True, help="Identity coefficients predicted.")
@click.option("--n-exp", default=None, type=int, help="Expression coefficients predicted (default: all).")
@click.option("--n-albedo", default=0, show_default=True, help="Albedo coefficients predicted (0 = no head).")
@click.option("--predict-sh/--no-predict-sh", default=False, show_default=True, help="Also predict SH lighting.")
@click.option("--feedback-cell", default=0.0, show_default=True,
              help="Feedback maps from a vertex-clustered mesh, cell size in mm (0 = full mesh).")
@click.option("--mask-input/--no-mask-input", default=True, show_default=True, help="Mask the input image.")
@click.option("--color-jitter", default=0.1, show_default=True, help="Colour augmentation (0 = off).")
@click.option("--crop-jitter", default=0.02, show_default=True, help="Shift augmentation, fraction of size.")
@click.option("--w-geo", default=1.0, show_default=True, help="Weight: model-space vertex loss.")
@click.option("--w-proj", default=1.0, show_default=True, help="Weight: projected vertex loss.")
@click.option("--w-pose", default=1.0, show_default=True, help="Weight: pose loss.")
@click.option("--w-cam", default=1.0, show_default=True, help="Weight: camera loss.")
@click.option("--w-param", default=0.0, show_default=True, help="Weight: plain coefficient loss.")
@click.option("--w-alb", default=1.0, show_default=True, help="Weight: albedo loss (with --n-albedo).")
@click.option("--w-sh", default=1.0, show_default=True, help="Weight: SH loss (with --predict-sh).")
@click.option("--val-every", default=1000, show_default=True, help="Validate every N steps.")
@click.option("--val-samples", default=512, show_default=True, help="Validation samples used.")
@click.option("--log-every", default=10, show_default=True, help="Log a row every N steps.")
@click.option("--ckpt-every", default=1000, show_default=True, help="Checkpoint every N steps.")
@click.option("--stats-samples", default=2000, show_default=True, help="Samples for the pose/camera normalisation.")
@click.option("--stop-at", default=0, show_default=True, help="Stop after this step (resume later); 0 = off.")
@click.option("--resume", is_flag=True, default=False, help="Continue from OUT/checkpoints/last.pt.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="tqdm progress bar.")
def coarse(**kwargs) -> None:
    """Phase 1: train CoarseNet on synthetic shards."""
    from .checkpoint import CheckpointError
    from .data import ShardError
    from .trainer import train_coarse

    try:
        config = CoarseConfig(**kwargs)
        result = train_coarse(config)
    except (ValueError, CheckpointError, ShardError, FloatingPointError) as e:  # ModelFileError is a ValueError
        _fail(e)
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.losses[-1][1] if result.losses else float("nan")
        click.echo(f"done: step {result.step}, loss {last:.4g}, checkpoint {result.checkpoint}")
        if result.val:
            click.echo("validation: " + json.dumps({k: round(v, 4) for k, v in result.val.items()}))


@main.command()
@click.option("--ckpt", required=True, type=click.Path(exists=True, dir_okay=False), help="Checkpoint: a run's .pt or exported .safetensors.")
@click.option("--data", required=True, type=click.Path(), help="Directory of shards to evaluate on.")
@click.option("--model", default=None, type=click.Path(), help="Morphable model file; default: the built-in model.")
@click.option("--samples", default=512, show_default=True, help="Samples evaluated (the first ones).")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--json-out", default=None, type=click.Path(), help="Also write the metrics to this JSON file.")
def evaluate(ckpt, data, model, samples, batch_size, device, json_out) -> None:
    """Validation metrics of a checkpoint on shards, per iteration."""
    from .checkpoint import CheckpointError
    from .data import ShardError
    from .trainer import evaluate_checkpoint

    try:
        res = evaluate_checkpoint(ckpt, data, model_path=model, samples=samples, batch_size=batch_size, device=device)
    except (ValueError, CheckpointError, ShardError) as e:
        _fail(e)
    for k, v in res.items():
        click.echo(f"{k:28s} {v:.4f}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(res, f, indent=2)



@main.command()
@click.argument("ckpt", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
def export(ckpt, out) -> None:
    """Write the network weights of CKPT to OUT.safetensors (tensors only, no pickle; config,
    task state, model fingerprint and format version as JSON metadata), for sharing and inference."""
    from .checkpoint import CheckpointError, export_inference

    if not out.endswith(".safetensors"):
        raise click.BadParameter(f"must end in .safetensors, got {out}", param_hint="OUT")
    try:
        path = export_inference(ckpt, out)
    except CheckpointError as e:
        _fail(e)
    click.echo(f"exported {ckpt} -> {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")


@main.command("convert-checkpoint")
@click.argument("old", type=click.Path(exists=True, dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--i-trust-this-file", "trust", is_flag=True,
              help="Required: OLD is unpickled, which runs any code it holds.")
def convert_checkpoint(old, new, trust) -> None:
    """Rewrite an old (format 1, pickled) checkpoint OLD as a format-2 checkpoint NEW that loads
    without running code. Reading OLD runs the full unpickler: use it only on files you trust
    (your own runs, a source you know); NEW may be OLD itself."""
    from .checkpoint import CheckpointError, convert_checkpoint as convert

    try:
        path = convert(old, new, trust=trust)
    except CheckpointError as e:
        _fail(e)
    click.echo(f"converted {old} -> {path} (format 2, loads with weights_only=True)")


if __name__ == "__main__":  # python -m train.cli (torchrun -m train.cli ...)
    main()
