"""``identity`` metric (issue 14; seed 002 names identity drift of translated faces as unmeasured): dlib 128-d face
descriptors of each generated image and its source, Euclidean distance
(:func:`kdpipe.pipeline.attributes.identity.identity_distance`; < 0.6 = the same person by dlib's threshold).

The source of generated[i] is the translation's input (``--student`` runs: the image it was made from, when it has
3 channels), else reference[i] (paired sets, e.g. a dataset's ``tgt`` against its ``src``).
"""

from __future__ import annotations

import numpy as np

from kdpipe.errors import ConfigError


def compute_identity(ctx) -> dict[str, float]:
    """``identity_distance`` (mean over pairs where dlib finds both faces), ``identity_same_person`` (fraction of
    those under 0.6), ``identity_distance_median`` and ``identity_measured`` (fraction of pairs with both faces).

    Raises:
        ConfigError: no source (neither 3-channel inputs nor a reference), or no pair with a face in both images.
    """
    from kdpipe.pipeline.attributes.identity import SAME_PERSON_DISTANCE, identity_distance

    gen = ctx.floats("generated")
    inputs = ctx.generated.inputs
    if inputs is not None and inputs.shape[1] == 3:
        source, what = ctx.floats("inputs"), "inputs"
    elif ctx.reference is not None:
        source, what = ctx.floats("reference"), "reference"
    else:
        raise ConfigError("metric 'identity' compares each image with its source: evaluate a --student run on RGB "
                          "inputs, or pass a paired --reference (e.g. the dataset's src role)")
    n = min(len(gen), len(source))
    dist = identity_distance(source[:n], gen[:n]).astype(np.float64)
    ok = np.isfinite(dist)
    if not ok.any():
        raise ConfigError(f"metric 'identity': dlib found no face in both images of any of the {n} pairs "
                          f"(generated vs {what}); it needs face images of at least ~40 px per face")
    return {"identity_distance": float(dist[ok].mean()),
            "identity_same_person": float((dist[ok] < SAME_PERSON_DISTANCE).mean()),
            "identity_distance_median": float(np.median(dist[ok])),
            "identity_measured": float(ok.mean())}
