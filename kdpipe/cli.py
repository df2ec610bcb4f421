"""The ``kdpipe`` command (typer). Commands are thin: they parse options and call one library function.

Errors that are the user's to fix (:class:`kdpipe.errors.KdpipeError`, and OSErrors such as a full disk or a file
where a directory belongs) print as one line ``error: ...`` and exit 2; set ``KDPIPE_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from kdpipe.errors import report_user_errors  # KdpipeError / user-fixable OSError -> one line

app = typer.Typer(help="Distil a pretrained StyleGAN2 into datasets and fast students.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


@app.command()
@report_user_errors
def generate(
    task: Annotated[str, typer.Option(help="Task from stages.yaml: style-mix, morph, gender, age, brightness, stroke.")],
    out: Annotated[Path, typer.Option(help="Output root; the task writes OUT/<task>/.", envvar="KDPIPE_OUT")] = Path("out"),
    generator: Annotated[Optional[str], typer.Option(
        help="Teacher: NVlabs TF .pkl, stylegan2-ada/stylegan3 .pkl, rosinality .pt, or builtin:random-64.")] = None,
    n: Annotated[Optional[int], typer.Option("-n", "--n", help="Number of samples (render.n).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Base seed (render.seed).")] = None,
    truncation_psi: Annotated[Optional[float], typer.Option(help="Truncation psi (teacher.truncation_psi).")] = None,
    mix: Annotated[Optional[str], typer.Option(help="Style-mix layers: crossover:K, coarse, middle, fine.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per generator forward.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="PNG encoder threads (0 = inline).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file overriding stages.yaml.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=(
        "Override: SECTION.KEY=VALUE (repeatable). Sections, keys, defaults and ranges: the documented dataclasses "
        "of pipeline/config.py."))] = None,
    dry_run: Annotated[bool, typer.Option(help="Print which stages would run or be skipped, and why.")] = False,
    progress: Annotated[Optional[bool], typer.Option(help="Show progress bars.")] = None,
):
    """Generate a dataset; re-running the same command resumes where it stopped."""
    from kdpipe.pipeline.generate import generate as run

    cli = {"teacher.generator": generator, "teacher.truncation_psi": truncation_psi, "render.n": n,
           "render.seed": seed, "render.mix": mix, "runtime.device": device, "runtime.batch_size": batch_size,
           "runtime.encode_workers": workers, "runtime.progress": progress}
    decisions = run(task, out, config_file=config, overrides=set_, cli=cli, dry_run=dry_run,
                    log=lambda m: typer.echo(m, err=True))
    for d in decisions:
        verb = {"skip": "skip  ", "run": "run   ", "resume": "resume"}[d.action]
        prefix = "would " if dry_run else ""
        typer.echo(f"{prefix}{verb} {d.stage:<10} {d.reason}  [{d.fingerprint[:12]}]")
    if not dry_run:
        typer.echo(f"dataset: {out / task}")


@app.command()
@report_user_errors
def status(out_dir: Annotated[Path, typer.Argument(help="A task output directory, OUT/<task>.")],
           deep: Annotated[bool, typer.Option(help="Also re-hash every shard against its recorded sha256.")] = False):
    """Show each stage of an output directory: done / partial (k of n shards) / stale / missing / corrupt."""
    from kdpipe.pipeline.generate import status as get_status

    for row in get_status(out_dir, deep=deep):
        typer.echo(f"{row['stage']:<10} {row['state']:<8} {row['detail']}")


@app.command()
@report_user_errors
def publish(src: Annotated[Path, typer.Argument(help="A finished task directory OUT/<task>.")],
            dest: Annotated[str, typer.Argument(help="Local path or fsspec URL (s3://..., gs://...).")],
            replace: Annotated[bool, typer.Option(
                help="DEST holds another dataset: publish a new version in its place.")] = False):
    """Copy shards, manifest, card and SHA256SUMS to DEST, verifying every checksum; re-running skips good files."""
    from kdpipe.pipeline.publish import publish as do_publish

    report = do_publish(src, dest, log=lambda m: typer.echo(m, err=True), replace=replace)
    typer.echo(f"published {report['copied']} file(s), {report['skipped']} already present, to {dest}")


@app.command()
@report_user_errors
def verify(path: Annotated[str, typer.Argument(help="A dataset directory (local or fsspec URL) with SHA256SUMS.")]):
    """Re-check a dataset against its SHA256SUMS and manifest; exit 1 naming each bad file."""
    from kdpipe.pipeline.publish import verify as do_verify

    problems = do_verify(path)
    for p in problems:
        typer.echo(f"FAILED {p}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"OK {path}")


@app.command()
@report_user_errors
def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG/JPEG).")],
    classifier: Annotated[Optional[list[str]], typer.Option(
        help="Classifier name or module:Class (repeatable); default face-attributes.")] = None,
    device: Annotated[str, typer.Option(help="Device for MTCNN: cpu, cuda.")] = "cpu",
):
    """Print one JSON line per image: face probability and box, each attribute's value and confidence."""
    from kdpipe.pipeline.attributes.classifiers import build_classifier, classify_files
    from kdpipe.pipeline.attributes.labels import FACE_CLASSIFIERS

    clfs = [build_classifier(c, **({"device": device} if c in FACE_CLASSIFIERS else {}))
            for c in (classifier or ["face-attributes"])]
    for entry in classify_files(images, clfs):
        typer.echo(json.dumps(entry, sort_keys=True))


@app.command()
@report_user_errors
def preview(task_dir: Annotated[Path, typer.Argument(help="A generated task directory, OUT/<task>.")],
            png: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("preview.png"),
            rows: Annotated[int, typer.Option(help="Samples per column.")] = 8,
            columns: Annotated[int, typer.Option(help="Columns of samples.")] = 1,
            scale: Annotated[int, typer.Option(help="Integer upscale (nearest).")] = 1):
    """Write a PNG grid of a dataset's first samples (x1 x2 y, or src tgt, per sample)."""
    from kdpipe.pipeline.preview import contact_sheet

    typer.echo(contact_sheet(task_dir, png, rows, columns, scale))


@app.command()
@report_user_errors
def align(images: Annotated[list[Path], typer.Argument(help="Photos (PNG/JPEG), at most 4096x4096 pixels each.")],
          out: Annotated[Path, typer.Option(help="Folder for the aligned <stem>.png files.")],
          size: Annotated[int, typer.Option(help="Output side in pixels (FFHQ: 1024; use the student's).")] = 1024):
    """FFHQ-align the main face of each photo (dlib 68 landmarks, NVlabs ffhq-dataset crop/rotate/pad/resize)."""
    from kdpipe.pipeline.align import align_files

    written = align_files(images, out, size, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"aligned {len(written)} of {len(images)} image(s) into {out}")


def _mount_trainers() -> None:
    """``kdpipe train NAME`` for every registered trainer and ``kdpipe translate`` (trainers import pipeline)."""
    from kdpipe.trainers.cli import train_app, translate_command

    app.add_typer(train_app, name="train")
    app.command("translate")(translate_command)
    from kdpipe.trainers.metrics.cli import eval_command

    app.command("eval")(eval_command)


_mount_trainers()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
