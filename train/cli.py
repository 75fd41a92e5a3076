"""``train-cli``: train CoarseNet on synthetic shards (phase 1) and FineNet (phase 2), evaluate
checkpoints, reconstruct photos, export inference weights (safetensors), average the weights of
several runs and convert old pickled checkpoints.

The options of each command are generated from its job config (:func:`options_from`): every
field of :class:`train.config.CoarseConfig` is one ``coarse`` flag, every field of
:class:`train.config.EvaluateConfig` one ``evaluate`` flag, with the field's type, default and
docstring; bad values are reported with the flag's name. Multi-process:
``torchrun --nproc-per-node N $(which train-cli) coarse ...`` (DDP; gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import types
import typing
from typing import Any, Callable, Literal

import click

from .config import CoarseConfig, EvaluateConfig, FineConfig, ReconstructConfig, field_docs
from .metrics import metrics_report, metrics_table

__all__ = ["main", "options_from"]

log = logging.getLogger(__name__)

_SCALARS = {str: click.STRING, int: click.INT, float: click.FLOAT}


def _click_type(annotation: Any, where: str) -> tuple[Any, bool, bool]:
    """``(click type, is_flag, multiple)`` of a field annotation: ``bool`` -> a flag pair, ``str``
    / ``int`` / ``float`` and ``X | None`` -> that type, ``Literal[...]`` -> a choice,
    ``tuple[X, ...]`` -> a flag that may be repeated (``--photos a --photos b``)."""
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if len(args) != 2 or args[1] is not Ellipsis or args[0] not in _SCALARS:
            raise TypeError(f"{where}: only 'tuple[X, ...]' tuples map to a repeated flag, got {annotation}")
        return _SCALARS[args[0]], False, True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: only 'X | None' unions map to a flag, got {annotation}")
        annotation = args[0]
    if annotation is bool:
        return click.BOOL, True, False
    if typing.get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)]), False, False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False, False
    raise TypeError(f"{where}: no flag type for the annotation {annotation}")


def options_from(config_cls: type) -> Callable[[Callable], Callable]:
    """Decorator adding one click option per field of the dataclass ``config_cls``.

    Field ``batch_size: int = 32`` becomes ``--batch-size`` (type int, default 32, shown in
    ``--help``); a ``bool`` field an ``--x/--no-x`` pair (one flag ``--x`` with the field metadata
    :data:`train.config.SINGLE_FLAG`); a ``tuple[str, ...]`` field a flag that may be repeated; a
    field without default a required option; the help text is the field's docstring (:func:`train.config.field_docs`). The
    command receives the values as keyword arguments named like the fields.
    """
    hints = typing.get_type_hints(config_cls, include_extras=False)
    docs = field_docs(config_cls)

    def decorate(f: Callable) -> Callable:
        for field in reversed(dataclasses.fields(config_cls)):  # click lists options in decoration order
            flag = "--" + field.name.replace("_", "-")
            click_type, is_flag, multiple = _click_type(hints[field.name], f"{config_cls.__name__}.{field.name}")
            doc = docs[field.name]
            kw: dict[str, Any] = {"help": doc}
            if field.default is dataclasses.MISSING:
                kw["required"] = True
            else:
                kw["default"] = field.default
                kw["show_default"] = field.default not in (None, ())
            if multiple:
                kw["multiple"] = True
            if is_flag and field.metadata.get("single_flag"):  # SINGLE_FLAG: one flag, e.g. --no-fine
                f = click.option(flag, field.name, is_flag=True, **kw)(f)
            elif is_flag:
                f = click.option(f"{flag}/--no-{flag[2:]}", field.name, **kw)(f)
            else:
                f = click.option(flag, field.name, type=click_type, **kw)(f)
        return f

    return decorate


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
@options_from(CoarseConfig)
def coarse(**kwargs) -> None:
    """Phase 1: train CoarseNet on synthetic shards."""
    from .checkpoint import CheckpointError
    from .coarse_task import train_coarse
    from .data import ShardError

    try:
        config = CoarseConfig(**kwargs)
        result = train_coarse(config)
    except (ValueError, CheckpointError, ShardError, FloatingPointError) as e:  # ModelFileError is a ValueError
        _fail(e)
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.losses[-1][1] if result.losses else float("nan")
        click.echo(f"done: step {result.step}, loss {last:.4g}, checkpoint {result.checkpoint}")
        if result.val:
            click.echo("validation (held-out, with the reference estimates):")
            click.echo(metrics_table(metrics_report(result.val)))


@main.command()
@options_from(FineConfig)
def fine(**kwargs) -> None:
    """Phase 2: train FineNet on photos (unsupervised shape from shading on CoarseNet's depth),
    optionally with supervised batches of synthetic shards."""
    from .checkpoint import CheckpointError
    from .data import ShardError
    from .fine_task import train_fine

    try:
        config = FineConfig(**kwargs)
        result = train_fine(config)
    except (ValueError, CheckpointError, ShardError, FloatingPointError) as e:  # PhotoError is a ValueError
        _fail(e)
    if int(os.environ.get("RANK", "0")) == 0:
        if result.summary:
            click.echo(result.summary)
        last = result.losses[-1][1] if result.losses else float("nan")
        click.echo(f"done: step {result.step}, loss {last:.4g}, checkpoint {result.checkpoint}")
        if result.val:
            click.echo("validation: " + json.dumps({k: round(v, 4) for k, v in result.val.items()}))


@main.command()
@options_from(EvaluateConfig)
def evaluate(**kwargs) -> None:
    """Metrics of a checkpoint per iteration, beside the reference estimates, on held-out shards
    (--data) and / or real photos (--photos: landmark NME against the face detector); --json
    writes them all (definitions: docs/training.md, "Metrics")."""
    from tqdm import tqdm

    from .checkpoint import CheckpointError
    from .data import ShardError
    from .evaluate import evaluate_checkpoint

    open_bars: list = []

    def bars(desc: str, total: int | None):
        bar = tqdm(total=total, desc=desc, unit="sample" if desc == "shards" else "photo")
        open_bars.append(bar)
        return bar.update

    try:
        config = EvaluateConfig(**kwargs)
        report = evaluate_checkpoint(config, bars=bars)
    except (ValueError, CheckpointError, ShardError) as e:
        _fail(e)
    finally:
        for bar in open_bars:
            bar.close()
    click.echo(f"checkpoint {report['checkpoint']} (step {report['step']})")
    if "iterations" in report:
        click.echo(f"shards {report['data']}:")
        click.echo(metrics_table(report))
    if "photos" in report:
        ph = report["photos"]
        click.echo(f"photos: {ph['summary']}")
        if ph["fit_landmarks"] == "detector":
            click.echo("  (the detector's points were fitted: the figures against them are not an independent error)")
        for row in ph["per_photo"]:
            click.echo(f"  {row['face']:32s} NME51 {row['landmark_nme51']:.4f}  NME68 {row['landmark_nme68']:.4f}  "
                       f"(mean face, same pose: NME51 {row['mean_face_pred_pose_nme51']:.4f})")
        if ph["n_faces"]:
            click.echo(f"  median over {ph['n_faces']} faces: NME51 {ph['landmark_nme51_median']:.4f}, "
                       f"NME68 {ph['landmark_nme68_median']:.4f} (mean face, same pose: NME51 "
                       f"{ph['baselines']['mean_face_pred_pose']['landmark_nme51_median']:.4f})")
        ann = ph.get("annotated")
        if ann:
            for row in ph["per_photo"]:
                if "annotated_landmark_nme51" in row:
                    click.echo(f"  {row['face']:32s} against its hand-placed points: NME51 "
                               f"{row['annotated_landmark_nme51']:.4f} (the detector's: "
                               f"{row['annotated_detector_nme51']:.4f})")
            if ann["n_faces"]:
                click.echo(f"  median over {ann['n_faces']} annotated face{'s' if ann['n_faces'] != 1 else ''}: "
                           f"NME51 {ann['landmark_nme51_median']:.4f} (the detector's: {ann['detector_nme51_median']:.4f})")
            for sk in ann["skipped"]:
                click.echo(f"  annotation not used: {sk['reason']}")
    if config.json:
        try:
            _write_json(config.json, report)
        except OSError as e:  # the figures are printed above; say why the file is not there
            _fail(ValueError(f"--json {config.json}: cannot write ({e.strerror or e})"))
        click.echo(f"wrote {config.json}")


def _write_json(path: str, obj: Any) -> None:
    """``obj`` as JSON at ``path``, written atomically; NaN / inf become null (strict JSON)."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(clean(obj), f, indent=2, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@main.command("reconstruct")
@click.argument("photos", nargs=-1, required=True, type=click.Path())
@options_from(ReconstructConfig)
def reconstruct_cmd(photos, **kwargs) -> None:
    """Photos -> detailed 3-D faces. PHOTOS are image files and folders of them. Per face, into
    --out: <name>.json (68 landmarks in photo pixels, box, parameters, timings), coarse and detailed
    meshes (OBJ + PLY, photo colours), the depth as a 16-bit PNG, an overlay, a comparison and a
    turntable; and index.html to look at them. A bad or faceless file is skipped with its reason;
    the exit status is non-zero only when nothing could be reconstructed."""
    import warnings

    from tqdm import tqdm

    from .checkpoint import CheckpointError
    from .reconstruct import run_reconstruct

    # mediapipe 0.10.14 calls a protobuf API that protobuf 4 deprecates, once per photo: not the user's concern
    warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)

    try:
        config = ReconstructConfig(**kwargs)
    except ValueError as e:
        _fail(e)
    bar = None

    def on_total(n: int) -> None:
        nonlocal bar
        bar = tqdm(total=n, unit="photo", desc="reconstruct", disable=not config.progress)

    def on_skip(path, reason: str) -> None:  # one line per skipped file, above the bar
        tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)

    try:
        run = run_reconstruct(photos, config, progress=lambda k: bar.update(k) if bar is not None else None,
                              on_total=on_total, on_skip=on_skip)
    except (ValueError, CheckpointError) as e:  # ReconstructError, ModelFileError are ValueErrors
        _fail(e)
    finally:
        if bar is not None:
            bar.close()
    if not run.written:
        raise click.ClickException(f"nothing reconstructed: {len(run.skipped)} input(s) skipped")
    click.echo(run.summary())
    if run.index is not None:
        click.echo(f"open {run.index}")


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
    except OSError as e:  # an unwritable or missing folder for OUT
        _fail(ValueError(f"OUT {out}: cannot write ({e.strerror or e})"))
    click.echo(f"exported {ckpt} -> {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")


@main.command()
@click.argument("ckpts", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The averaged weights, written as OUT.safetensors (the format of train-cli export).")
@click.option("--data", type=click.Path(), default=None,
              help="Training shards to recompute the BatchNorm statistics on (required when the network has "
                   "BatchNorm and --bn-batches > 0).")
@click.option("--bn-batches", type=click.IntRange(min=0), default=200, show_default=True,
              help="Batches (of the last checkpoint's --batch-size, augmented as it was trained) the "
                   "BatchNorm statistics are averaged over; 0 keeps the average of the checkpoints' statistics.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the batches' order and augmentation.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda when available), cpu or cuda.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads (0: torch's default).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data-loader processes.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="A progress bar over the batches.")
def average(ckpts, out, data, bn_batches, seed, device, threads, workers, progress) -> None:
    """Average the weights of CoarseNet checkpoints CKPTS (the end points of runs that restart from
    one another: stochastic weight averaging) and recompute the BatchNorm statistics on training
    shards. The result keeps the last checkpoint's config and normalisation; evaluate it like any
    checkpoint (train-cli evaluate --checkpoint OUT.safetensors)."""
    import torch
    from tqdm import tqdm

    from .averaging import average_checkpoints, batchnorm_layers, recompute_batchnorm
    from .checkpoint import CheckpointError, write_inference
    from .coarse_task import task_from_checkpoint
    from .data import Augment, ShardDataset, ShardError, make_train_loader
    from .trainer import resolve_device

    if not out.endswith(".safetensors"):
        raise click.BadParameter(f"must end in .safetensors, got {out}", param_hint="--out")
    try:
        dev = resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        ck, morph = average_checkpoints(ckpts)
        config = CoarseConfig.from_dict(ck["config"])
        task = task_from_checkpoint(morph, ck, f"checkpoint {ckpts[-1]}").to(dev)
        used = 0
        if bn_batches and batchnorm_layers(task.model):
            if data is None:
                raise ValueError("--data: the network has BatchNorm layers; give training shards to recompute "
                                 "their statistics on (or --bn-batches 0 to keep the checkpoints' average)")
            ds = ShardDataset(data, fingerprint=morph, size=config.size, augment=Augment.from_config(config), seed=seed)
            if ds.projection != task.projection:
                raise ValueError(f"--data {data}: its shards use {ds.projection} projection, the network "
                                 f"{task.projection} ({ckpts[-1]})")
            loader = make_train_loader(ds, range(len(ds)), config.batch_size, seed, bn_batches, workers=workers)
            bar = tqdm(total=bn_batches, desc="BatchNorm statistics", unit="batch", disable=not progress)
            with bar:
                used = recompute_batchnorm(task.model, loader,
                                           lambda b: task.forward(task.model, task.prepare_batch(b, dev)), bar.update)
            ck["model"] = {k: v.detach().cpu() for k, v in task.model.state_dict().items()}
        elif data is not None:
            log.info("--data %s not used: %s", data, "--bn-batches 0" if not bn_batches else "no BatchNorm layer")
    except (ValueError, CheckpointError, ShardError) as e:
        _fail(e)
    try:
        path = write_inference(ck, out, source=f"checkpoint {ckpts[-1]}",
                               extra={"averaged_from": json.dumps(list(ckpts)), "batchnorm_batches": str(used)})
    except OSError as e:
        _fail(ValueError(f"--out {out}: cannot write ({e.strerror or e})"))
    stats = f", BatchNorm statistics from {used} batches of {data}" if used else ""
    click.echo(f"averaged {len(ckpts)} checkpoints -> {path}{stats}")


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
