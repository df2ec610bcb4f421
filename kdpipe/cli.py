"""The ``kdpipe`` command (typer). Commands are thin: they parse options and call one library function.

Errors that are the user's to fix (:class:`kdpipe.errors.KdpipeError`, and OSErrors such as a full disk or a file
where a directory belongs) print as one line ``error: ...`` and exit 2; set ``KDPIPE_DEBUG=1`` for the traceback.

Start-up: ``kdpipe --help`` must stay under 0.5 s (``benchmarks/cli_startup.py``), so this module imports no torch,
numpy or kdpipe.pipeline/trainers code at import time. A new command is a short function here that imports its
module inside its body; a whole group whose module must import torch to build its options goes in
:data:`LAZY_COMMANDS`. ``tests/test_cli_shape.py`` fails when ``kdpipe --help`` imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from kdpipe.errors import report_user_errors  # KdpipeError / user-fixable OSError -> one line

LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("kdpipe.trainers.cli:train_app", "Train a student (kdpipe train NAME --help lists its fields)."),
    "translate": ("kdpipe.trainers.cli:translate_command", "Apply a trained student to images."),
    "eval": ("kdpipe.trainers.metrics.cli:eval_command",
             "Evaluate images: FID, KID, precision/recall, LPIPS, attribute transfer (--help)."),
}
"""Commands whose module imports torch at import time: name -> ("module:attribute", one-line help for ``--help``).
The attribute is a ``typer.Typer`` (a group) or a typer command function; it is imported only when the command
runs (or its own ``--help`` is asked for), so ``kdpipe --help`` stays fast (``benchmarks/cli_startup.py``)."""


class LazyGroup(TyperGroup):
    """The top-level group: eager commands as usual, :data:`LAZY_COMMANDS` imported on first use."""

    def list_commands(self, ctx) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in LAZY_COMMANDS if name not in self.commands)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            self.commands[cmd_name] = _load_lazy(cmd_name)
        return super().get_command(ctx, cmd_name)

    def get_help_option(self, ctx):
        """The ``-h/--help`` flag with default False: typer coerces a flag left at None through pydantic, which
        costs ~0.15 s of imports before ``kdpipe CMD --help`` can print."""
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option

    def format_commands(self, ctx, formatter) -> None:
        """The command list of ``--help`` without importing the lazy commands (their help from the table)."""
        names = [n for n in self.list_commands(ctx) if n in LAZY_COMMANDS or not self.commands[n].hidden]
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(n, LAZY_COMMANDS[n][1] if n in LAZY_COMMANDS else self.commands[n].get_short_help_str(limit))
                for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _load_lazy(name: str):
    """The click command of ``LAZY_COMMANDS[name]`` (imports its module)."""
    import importlib

    module, attribute = LAZY_COMMANDS[name][0].split(":")
    target = getattr(importlib.import_module(module), attribute)
    if not isinstance(target, typer.Typer):
        single = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
        single.command(name)(target)
        target = single
    command = typer.main.get_command(target)
    command.name = name
    return command


def _print_version(value: bool) -> None:
    if value:
        import kdpipe

        typer.echo(f"kdpipe {kdpipe.__version__}")
        raise typer.Exit()


app = typer.Typer(help="Distil a pretrained StyleGAN2 into datasets and fast students.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=LazyGroup, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                                help="Print the kdpipe version and exit.")] = False) -> None:
    """Distil a pretrained StyleGAN2 into datasets and fast students."""


@app.command()
@report_user_errors
def generate(
    task: Annotated[str, typer.Option(help="Task from stages.yaml: style-mix, morph, gender, age, brightness, stroke.")],
    out: Annotated[Path, typer.Option(help="Output root; the task writes OUT/<task>/.", envvar="KDPIPE_OUT")] = Path("out"),
    generator: Annotated[Optional[str], typer.Option(
        help="Teacher: NVlabs TF .pkl, stylegan2-ada/stylegan3 .pkl, rosinality .pt, builtin:digits-32, "
             "builtin:random-64 (teacher.generator; required).")] = None,
    n: Annotated[Optional[int], typer.Option("-n", "--n", help="Number of samples (render.n; default 1000).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Base seed: sample i uses seeds seed+2i, seed+2i+1 (render.seed; default 0).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help=(
        "Seed list instead of --seed and -n, e.g. 0-99,200-201: sample i uses entries 2i and 2i+1 "
        "(render.seeds; default none)."))] = None,
    truncation_psi: Annotated[Optional[float], typer.Option(
        help="Truncation psi, 1 = none (teacher.truncation_psi; default 0.7).")] = None,
    mix: Annotated[Optional[str], typer.Option(
        help="Style-mix layers: crossover:K, coarse, middle, fine (render.mix; default crossover:4).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N (runtime.device; default auto).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Images per generator forward on CUDA (runtime.batch_size; default 16).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="PNG encoder threads, 0 = inline (runtime.encode_workers; default 1 on CPU, cores - 2 on CUDA).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file overriding stages.yaml (default none).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=(
        "Override: SECTION.KEY=VALUE (repeatable). Sections, keys, defaults and ranges: the documented dataclasses "
        "of pipeline/config.py."))] = None,
    dry_run: Annotated[bool, typer.Option(help="Print which stages would run or be skipped, and why.")] = False,
    progress: Annotated[Optional[bool], typer.Option(help="Show progress bars (runtime.progress; default on).")] = None,
):
    """Generate a dataset; re-running the same command resumes where it stopped."""
    from kdpipe.pipeline.generate import generate as run

    if seeds is not None and (n is not None or seed is not None):
        from kdpipe.errors import ConfigError

        raise ConfigError(f"--seeds {seeds!r} replaces --seed and -n; pass either --seeds or --seed/-n")
    cli = {"teacher.generator": generator, "teacher.truncation_psi": truncation_psi, "render.n": n,
           "render.seed": seed, "render.seeds": seeds, "render.mix": mix, "runtime.device": device,
           "runtime.batch_size": batch_size, "runtime.encode_workers": workers, "runtime.progress": progress}

    def print_plan(decisions) -> None:  # before any work starts; rank 0 only under torchrun / SLURM
        for d in decisions:
            verb = {"skip": "skip  ", "run": "run   ", "resume": "resume"}[d.action]
            typer.echo(f"{'would ' if dry_run else ''}{verb} {d.stage:<10} {d.reason}  [{d.fingerprint[:12]}]")

    decisions = run(task, out, config_file=config, overrides=set_, cli=cli, dry_run=dry_run,
                    log=lambda m: typer.echo(m, err=True), on_plan=print_plan)
    from kdpipe.pipeline.runner.dag import world_from_env

    if not dry_run and decisions and world_from_env()[0] == 0:
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
            dest: Annotated[str, typer.Argument(help=(
                "Local path, fsspec URL (s3://..., gs://...) or hf://datasets/ORG/NAME (Hugging Face Hub; token "
                "from HF_TOKEN or 'hf auth login')."))],
            replace: Annotated[bool, typer.Option(
                help="DEST holds another dataset: publish a new version in its place.")] = False):
    """Copy shards, manifest, card and SHA256SUMS to DEST, verifying every checksum; re-running skips good files.
    On the Hugging Face Hub the hashes checked are the hub's own (LFS sha256, git blob sha1)."""
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
def sample(
    generator: Annotated[str, typer.Option(help="Teacher: NVlabs TF .pkl, stylegan2-ada/stylegan3 .pkl, rosinality .pt, "
                                                "builtin:digits-32.")],
    outdir: Annotated[Path, typer.Option(help="Directory for the images (created).")],
    seeds: Annotated[Optional[str], typer.Option(help="Seeds: N, A-B (inclusive), comma-separated: 0-99,200.")] = None,
    trunc: Annotated[float, typer.Option("--trunc", "--truncation-psi", help="Truncation psi (1 = none).")] = 1.0,
    class_idx: Annotated[Optional[int], typer.Option("--class", help="Class index for a conditional generator.")] = None,
    noise_mode: Annotated[str, typer.Option(help="const | random | none ('random' is seeded per image).")] = "const",
    grid: Annotated[bool, typer.Option("--grid", help="One contact sheet grid.png instead of seedNNNN.png files.")] = False,
    style_mixing: Annotated[bool, typer.Option("--style-mixing", help=(
        "Official style-mixing grid: --rows x --cols seeds, --styles layers from the column seed."))] = False,
    rows: Annotated[Optional[str], typer.Option(help="Style-mixing row seeds, e.g. 85,100,75.")] = None,
    cols: Annotated[Optional[str], typer.Option(help="Style-mixing column seeds, e.g. 55,821,1789.")] = None,
    styles: Annotated[str, typer.Option(help="Style-mixing layers (ws indices) taken from the column seed.")] = "0-6",
    video: Annotated[bool, typer.Option("--video", help="Interpolation video through the seeds' ws.")] = False,
    w_frames: Annotated[int, typer.Option(help="Video frames between keyframes (frames; 60 fps).")] = 120,
    video_grid: Annotated[str, typer.Option(help="Video layout WxH (number of seeds a multiple of W*H).")] = "1x1",
    video_format: Annotated[str, typer.Option(help="auto (mp4 if imageio-ffmpeg, else gif) | mp4 | gif | png.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
):
    """Images of a teacher by seed, like NVlabs gen_images.py / style_mixing.py / gen_video.py (same seed, same
    image)."""
    import re

    from kdpipe.errors import ConfigError
    from kdpipe.pipeline.latents import parse_seeds
    from kdpipe.pipeline.sampling.command import sample as run

    match = re.fullmatch(r"(\d+)[x,](\d+)", video_grid)
    if not match:
        raise ConfigError(f"--video-grid {video_grid!r}: write WxH, e.g. 2x2")
    written = run(generator, outdir, parse_seeds(seeds) if seeds else [], trunc, class_idx, noise_mode, grid,
                  style_mixing, parse_seeds(rows, "--rows") if rows else [], parse_seeds(cols, "--cols") if cols else [],
                  parse_seeds(styles, "--styles"), video, w_frames, (int(match[1]), int(match[2])), video_format,
                  device, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"wrote {len(written)} file(s) to {outdir}" if len(written) != 1 else f"wrote {written[0]}")


@app.command()
@report_user_errors
def align(images: Annotated[list[Path], typer.Argument(help="Photos (PNG/JPEG), at most 4096x4096 pixels each.")],
          out: Annotated[Path, typer.Option(help="Folder for the aligned <stem>.png files.")],
          size: Annotated[int, typer.Option(help="Output side in pixels (FFHQ: 1024; use the student's).")] = 1024):
    """FFHQ-align the main face of each photo (dlib 68 landmarks, NVlabs ffhq-dataset crop/rotate/pad/resize)."""
    from kdpipe.pipeline.align import align_files

    written = align_files(images, out, size, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"aligned {len(written)} of {len(images)} image(s) into {out}")


@app.command()
@report_user_errors
def inspect(task_dir: Annotated[Path, typer.Argument(help="A finished task directory, OUT/<task>.")],
            out: Annotated[Optional[Path], typer.Option(
                help="Folder for the page; default OUT/<task>/inspect.")] = None,
            thumb_size: Annotated[int, typer.Option(help="Longest thumbnail side in px (never enlarged).")] = 96,
            page_size: Annotated[int, typer.Option(help="Samples per page in the browser.")] = 50):
    """Write a static HTML page (sortable, filterable, paged; thumbnails made once) and contact_sheet.png."""
    from kdpipe.pipeline.inspect import build_inspect

    index = build_inspect(task_dir, out, thumb_size=thumb_size, page_size=page_size,
                          log=lambda m: typer.echo(m, err=True))
    typer.echo(f"open {index.resolve().as_uri()}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
