"""``kdpipe eval``: the typer command (imports torch-dependent modules inside its body, so ``--help`` is fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdpipe.errors import ConfigError, report_user_errors


@report_user_errors
def eval_command(
    generator: Annotated[Optional[str], typer.Option(help="Evaluate a teacher: builtin:NAME or a .pkl/.pt checkpoint "
                                                          "(--n images from seeds --seed..).")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="Evaluate a dataset's --role images (OUT/<task>).")] = None,
    student: Annotated[Optional[Path], typer.Option(help="Evaluate a student: run directory (newest checkpoint) or "
                                                         "ckpt-*.pt, applied to --inputs.")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Evaluate a plain image folder.")] = None,
    inputs: Annotated[Optional[str], typer.Option(help="Student inputs: dataset dir, image folder or 'digits'.")] = None,
    role: Annotated[str, typer.Option(help="Image role read from --dataset / --inputs shards: src tgt x1 x2 y.")] = "src",
    reference: Annotated[Optional[str], typer.Option(help="'digits', image folder (sub-folders = classes), dataset "
                                                          "dir or generator.")] = None,
    reference_role: Annotated[str, typer.Option(help="Image role of a reference dataset.")] = "tgt",
    n: Annotated[Optional[int], typer.Option("--n", "-n", help="Images to evaluate (generators: required).")] = None,
    reference_n: Annotated[Optional[int], typer.Option(help="Reference images (default all; generators: --n).")] = None,
    seed: Annotated[int, typer.Option(help="First generator seed; also seeds KID subsets.")] = 0,
    truncation_psi: Annotated[float, typer.Option(help="Generator truncation (1 = none, the FID convention).")] = 1.0,
    metrics: Annotated[str, typer.Option(help="Comma-separated: fid,kid,pr,lpips-diversity,lpips-pair,attribute,"
                                              "rc-fc (see kdpipe.trainers.metrics.registry).")] = "fid,kid,pr",
    features: Annotated[str, typer.Option(help="FID/KID/PR features: inception | digits.")] = "inception",
    inception_weights: Annotated[Optional[Path], typer.Option(
        help="weights-inception-2015-12-05-6726825d.pth (default: torch hub's checkpoint cache).")] = None,
    lpips_net: Annotated[str, typer.Option(help="LPIPS backbone: alex | vgg.")] = "alex",
    lpips_weights: Annotated[Optional[Path], typer.Option(
        help="torchvision alexnet-owt-7be5be79.pth / vgg16-397923af.pth (default: torch hub's cache).")] = None,
    classifier: Annotated[str, typer.Option(help="Attribute classifier (registry name or module:Name).")] = "digit",
    attribute: Annotated[Optional[str], typer.Option(help="Attribute of --classifier (default: its first).")] = None,
    min_confidence: Annotated[float, typer.Option(help="Attribute transfer: minimum classifier confidence.")] = 0.5,
    label_classifier: Annotated[Optional[str], typer.Option(
        help="Give unlabelled sets classes from this classifier (per-class mFID/mKID, rc-fc), e.g. digit.")] = None,
    label_key: Annotated[Optional[str], typer.Option(help="Class label key in shard json.")] = None,
    kid_subsets: Annotated[int, typer.Option(help="KID subsets.")] = 100,
    kid_subset_size: Annotated[int, typer.Option(help="KID subset size (clamped to the set sizes).")] = 1000,
    out: Annotated[Optional[Path], typer.Option(help="Where eval-*.json / .png and metrics.jsonl go (default: the "
                                                     "student run or dataset directory).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache (default $KDPIPE_CACHE/features or "
                                                           "~/.cache/kdpipe/features).")] = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Cache features per image set.")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per feature/LPIPS batch.")] = 64,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="tqdm bars.")] = True,
) -> None:
    """Evaluate generated/translated images: FID, KID, precision/recall, LPIPS, attribute transfer (issue 14)."""
    from kdpipe.devices import resolve_device
    from kdpipe.trainers.metrics.cache import FeatureCache
    from kdpipe.trainers.metrics.context import EvalOptions
    from kdpipe.trainers.metrics.evaluate import evaluate, summary_lines
    from kdpipe.trainers.metrics.sources import is_generator_spec, load_source, student_images

    given = [name for name, v in (("--generator", generator), ("--dataset", dataset), ("--student", student),
                                  ("--images", images)) if v is not None]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of --generator, --dataset, --student, --images (got {given or 'none'})")
    from kdpipe.trainers.metrics.evaluate import FEATURE_METRICS
    from kdpipe.trainers.metrics.features import get_extractor

    if features != "digits" and any(m.strip() in FEATURE_METRICS for m in metrics.split(",")):
        get_extractor(features, inception_weights, "cpu")  # a missing weights file fails before images load
    dev = str(resolve_device(device))
    step = None
    if student is not None:
        if inputs is None:
            raise ConfigError("--student needs --inputs: the images to translate (dataset dir, folder or 'digits')")
        gen = student_images(student, inputs, n, role, dev, batch_size)
        step = gen.info.get("step")
    else:
        spec = generator or str(dataset if dataset is not None else images)
        gen = load_source(spec, n, role=role, label_key=label_key, seed=seed, truncation_psi=truncation_psi,
                          device=dev)
    ref = None
    if reference is not None:
        ref = load_source(reference, reference_n or (n if is_generator_spec(reference) else None),
                          role=reference_role, label_key=label_key, seed=seed, truncation_psi=truncation_psi,
                          device=dev)
    if out is None:
        out = student if student is not None and student.is_dir() else dataset
    if out is None:
        raise ConfigError("pass --out DIR for the results (only student runs and datasets have a default)")
    opts = EvalOptions(features=features, inception_weights=str(inception_weights) if inception_weights else None,
                       device=dev, batch_size=batch_size, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                       lpips_net=lpips_net, lpips_weights=str(lpips_weights) if lpips_weights else None,
                       classifier=classifier, attribute=attribute, min_confidence=min_confidence, seed=seed,
                       progress=progress)
    doc = evaluate(gen, ref, metrics, opts, out, FeatureCache(cache_dir) if cache else None,
                   label_classifier=label_classifier, step=step)
    typer.echo("\n".join(summary_lines(doc)))
