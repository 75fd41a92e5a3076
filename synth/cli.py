"""``synth-cli``: render synthetic face datasets into HDF5 shards, verify and preview them.

    synth-cli render --out shards/ --n 100000 --lights sh9 --size 224 --workers 2 --seed 0
    synth-cli verify shards/
    synth-cli preview shards/shard-00000.h5 --out grid.png
    synth-cli model info | export ...        (morphable model tools)
"""
from __future__ import annotations

import logging
from pathlib import Path

import click

from .lighting import LIGHT_MODES
from .backgrounds import BACKGROUNDS


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log progress details")
def main(verbose: bool) -> None:
    """Synthetic training data for detailed face reconstruction."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


from synth.cli_model import model as model_group  # noqa: E402  (synth-cli model info|export)

main.add_command(model_group)


def _pair(text: str, flag: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected lo,hi numbers, got {text!r}", param_hint=flag) from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise click.BadParameter(f"expected lo,hi, got {text!r}", param_hint=flag)
    return parts[0], parts[1]


@main.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="output folder for the shards")
@click.option("--n", "n", required=True, type=int, help="total number of samples N")
@click.option("--lights", type=click.Choice(LIGHT_MODES), default="sh9", show_default=True,
              help="sh9: 27 SH coefficients; ambient; point: directional + ambient")
@click.option("--size", type=int, default=224, show_default=True, help="image side in pixels")
@click.option("--workers", type=int, default=1, show_default=True, help="rendering processes (this one + W-1 spawned), one core each: one BLAS and one llvmpipe thread")
@click.option("--seed", type=int, default=0, show_default=True, help="global seed; sample i depends only on (seed, i)")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="BFM2017/2019 .h5 or BFM2009 .mat (default: built-in model)")
@click.option("--detail/--no-detail", default=True, show_default=True, help="procedural wrinkles and pores")
@click.option("--detail-scale", type=float, default=1.0, show_default=True, help="multiplies detail amplitudes")
@click.option("--cavity", type=float, default=0.4, show_default=True,
              help="crease darkening: creases d mm deep get exp(-cavity d) of the light (0 = off)")
@click.option("--shard-size", type=int, default=None,
              help="samples per shard [default: the existing dataset's in --out, else from N: "
                   "min(1000, max(32, 16 ceil(N/1024))), at most 64 shards below N = 64000; never from --workers]")
@click.option("--shard-range", default=None, help="render only shards a..b-1 (a:b); default: all, or the "
              "SLURM_ARRAY_TASK_ID share")
@click.option("--compression", type=click.Choice(["zstd", "gzip", "lzf"]), default="zstd", show_default=True,
              help="zstd: Zstandard level 1 (hdf5plugin; smallest and fastest); gzip: level 1 + shuffle (plain h5py); "
                   "lzf: plain h5py, fast, larger")
@click.option("--image-codec", type=click.Choice(["lossless", "jpeg"]), default="lossless", show_default=True,
              help="how the image is stored: lossless (shard layout 6) or jpeg (layout 7: lossy, 4:4:4, "
                   "--jpeg-quality; ~half the bytes per sample, every other output exact)")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=None,
              help="JPEG quality of --image-codec jpeg [default: 95]")
@click.option("--projection", type=click.Choice(["perspective", "weak_perspective"]), default="perspective",
              show_default=True)
@click.option("--background", type=click.Choice(BACKGROUNDS), default=None,
              help="photos: crops of real photos bundled with scikit-image (no faces) [default; images when "
                   "--background-dir is given]; images: --background-dir; noise; solid; none")
@click.option("--background-dir", type=click.Path(path_type=Path), default=None,
              help="image folder for --background images")
@click.option("--occluders", type=float, default=0.2, show_default=True,
              help="probability of 1-3 occluding shapes (photo-textured or flat)")
@click.option("--line-occluders", type=float, default=0.0, show_default=True,
              help="probability of thin dark lines with no geometry, placed by the landmarks: glasses rims, "
                   "brows, hair strands (so a detail network does not read every dark line as a crease)")
@click.option("--facial-hair", type=float, default=0.0, show_default=True,
              help="probability of facial hair painted on the face with no geometry, placed by the landmarks: "
                   "stubble, moustache, goatee or beard (so a detail network does not read hair texture as relief)")
@click.option("--specular/--no-specular", default=True, show_default=True,
              help="Blinn-Phong highlight from the SH lighting's dominant light")
@click.option("--specular-strength", default="0,0.5", show_default=True,
              help="highlight strength range lo,hi (uniform; x the light's irradiance)")
@click.option("--shininess", default="4,64", show_default=True, help="Blinn-Phong exponent range lo,hi (log-uniform)")
@click.option("--yaw", type=float, default=75.0, show_default=True, help="max |yaw| degrees")
@click.option("--pitch", type=float, default=30.0, show_default=True, help="max |pitch| degrees")
@click.option("--roll", type=float, default=20.0, show_default=True, help="max |roll| degrees")
@click.option("--distance", default="300,3000", show_default=True,
              help="camera distance range lo,hi mm, log-uniform (the perspective strength; the framing is "
                   "the photo pipeline's, synth.framing)")
@click.option("--framing-jitter", type=float, default=1.0, show_default=True,
              help="x the face detector's measured crop jitter (0 = the exact framing rule)")
@click.option("--fov", "retired_fov", default=None, hidden=True)
@click.option("--face-fraction", "retired_face_fraction", default=None, hidden=True)
@click.option("--jitter", "retired_jitter", default=None, hidden=True)
@click.option("--id-scale", type=float, default=1.0, show_default=True, help="identity prior sigma scale")
@click.option("--exp-scale", type=float, default=1.0, show_default=True, help="expression prior sigma scale")
@click.option("--albedo-scale", type=float, default=1.0, show_default=True, help="albedo prior sigma scale")
@click.option("--truncation", type=float, default=3.0, show_default=True, help="clip coefficients (std); 0 = off")
@click.option("--platform", type=click.Choice(["cpu", "osmesa", "egl"]), default="cpu", show_default=True,
              help="triangle-id rasterizer: cpu (compiled, no OpenGL), osmesa (software OpenGL), egl (GPU OpenGL)")
def render(out, n, lights, size, workers, seed, model_path, detail, detail_scale, cavity, shard_size, shard_range,
           compression, image_codec, jpeg_quality, projection, background, background_dir, occluders, line_occluders,
           facial_hair, specular, specular_strength, shininess,
           yaw, pitch, roll, distance,
           framing_jitter, retired_fov, retired_face_fraction, retired_jitter, id_scale, exp_scale, albedo_scale,
           truncation, platform) -> None:
    """Render N samples into OUT/shard-*.h5 (resumes: finished shards are skipped).

    Each render is framed as the photo pipeline frames a photo (synth.framing, with the face
    detector's measured jitter); --distance sets how close the camera is (the perspective).
    """
    for flag, value in (("--fov", retired_fov), ("--face-fraction", retired_face_fraction), ("--jitter", retired_jitter)):
        if value is not None:
            raise click.UsageError(f"{flag} was retired: renders are framed by the photo pipeline's rule "
                                   "(synth.framing); use --distance lo,hi (mm) for the perspective and "
                                   "--framing-jitter for the crop jitter")
    if jpeg_quality is not None and image_codec != "jpeg":
        raise click.UsageError("--jpeg-quality applies to --image-codec jpeg (the default image codec is lossless)")
    from tqdm import tqdm

    from .codecs import DEFAULT_JPEG_QUALITY
    from .dataset import DatasetConfig, WorkerDied, parse_shard_range, render_dataset
    from .sampling import SamplingConfig

    try:
        sampling = SamplingConfig(
            lights=lights, id_scale=id_scale, exp_scale=exp_scale, albedo_scale=albedo_scale,
            truncation=truncation if truncation != 0 else None, yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll,
            projection=projection, distance_mm=_pair(distance, "--distance"), framing_jitter=framing_jitter,
            detail=detail, detail_scale=detail_scale, cavity=cavity,
            background=background or ("images" if background_dir else "photos"),
            background_dir=str(background_dir) if background_dir else None, occluders=occluders,
            line_occluders=line_occluders, facial_hair=facial_hair, specular=specular,
            specular_strength=_pair(specular_strength, "--specular-strength"),
            shininess=_pair(shininess, "--shininess"))
        config = DatasetConfig(out=str(out), n=n, size=size, seed=seed, shard_size=shard_size, workers=workers,
                               compression=compression, image_codec=image_codec,
                               jpeg_quality=DEFAULT_JPEG_QUALITY if jpeg_quality is None else jpeg_quality,
                               platform=platform,
                               model=str(model_path) if model_path else None,
                               shard_range=parse_shard_range(shard_range) if shard_range else None,
                               sampling=sampling)
        bar = None

        def on_start(todo: int, skipped: int) -> None:
            nonlocal bar
            if skipped:
                click.echo(f"{skipped} samples already rendered in {out} (finished shards skipped)", err=True)
            if todo:
                bar = tqdm(total=todo, unit="sample", desc="render", dynamic_ncols=True)

        def progress(k: int) -> None:
            if bar is not None:
                bar.update(k)

        try:
            summary = render_dataset(config, progress=progress, on_start=on_start)
        finally:
            if bar is not None:
                bar.close()
    except ValueError as e:  # includes morphable_model.ModelFileError
        raise click.ClickException(str(e)) from None
    except WorkerDied as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a full disk, an unwritable --out: the finished shards are kept
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        raise click.ClickException(f"{where}{e.strerror or ' '.join(str(e).split())}; the finished shards "
                                   f"in {out} are kept, rerun to resume") from None
    rate = summary.samples_rendered / summary.seconds if summary.seconds > 0 else 0.0
    click.echo(f"{summary.samples_rendered} samples in {summary.shards_rendered} shards written to {out} "
               f"({rate:.1f} samples/s); {summary.shards_skipped} shards were already done")


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--maps", is_flag=True,
              help="layouts 3 to 7: also recompute every sample's maps from its triangle ids and check them (slower; "
                   "layouts 6 and 7 recompute and check the ids without it)")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="the shards' morphable model, to recompute the ids (layouts 6 and 7) and the maps (--maps) "
                   "(default: the built-in model they name)")
def verify(directory: Path, maps: bool, model_path: Path | None) -> None:
    """Check every shard in DIRECTORY (checksums, counts, NaNs, value ranges); exit 1 if any is bad."""
    from .verify import verify_dir

    try:
        model = None
        if model_path is not None:
            from morphable_model import load_model

            model = load_model(model_path)
        reports, problems = verify_dir(directory, maps=maps, model=model)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    bad = [r for r in reports if not r.ok]
    for r in bad:
        click.echo(f"BAD {r.name}: " + "; ".join(r.problems))
    for p in problems:
        click.echo(f"BAD dataset: {p}")
    n = sum(r.n_samples for r in reports if r.ok)
    click.echo(f"{len(reports) - len(bad)}/{len(reports)} shards ok, {n} valid samples")
    if bad or problems:
        raise SystemExit(1)


@main.command()
@click.argument("shard", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG file to write")
@click.option("--samples", "n_samples", type=int, default=4, show_default=True, help="rows in the grid")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="the shard's morphable model, to recompute its maps (default: the built-in model it names)")
def preview(shard: Path, out: Path, n_samples: int, model_path: Path | None) -> None:
    """Draw a grid (image+landmarks / depth / normals / PNCC / mask) of the first samples of SHARD."""
    from .preview import preview_grid

    try:
        model = None
        if model_path is not None:
            from morphable_model import load_model

            model = load_model(model_path)
        preview_grid(shard, out, n_samples, model=model)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # not an HDF5 file, an unwritable --out
        raise click.ClickException(f"{e.filename or shard}: {e.strerror or ' '.join(str(e).split())}") from None
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
