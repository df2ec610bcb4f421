"""``identity`` metric: is the translated face still the same person? (issue 14; seed 002 names identity drift
as the weakness nobody measures.)

dlib's 128-d face descriptors (:func:`kdpipe.pipeline.attributes.identity.identity_distance`) of each translated
image vs its source (a ``--student`` run's inputs), or, for sets without inputs, vs the paired reference image
``reference[i]``. Distances under 0.6 (:data:`~kdpipe.pipeline.attributes.identity.SAME_PERSON_DISTANCE`) count
as the same person. Pairs where either image has no detected face are left out and counted in ``identity_faces``.
"""

from __future__ import annotations

import numpy as np

from kdpipe.errors import ConfigError


def compute(ctx) -> dict[str, float]:
    """``identity_distance`` (mean over pairs with faces), ``identity_same_person`` (fraction < 0.6) and
    ``identity_faces`` (fraction of pairs where both faces were found)."""
    from kdpipe.pipeline.attributes.identity import SAME_PERSON_DISTANCE, identity_distance

    gen = ctx.floats("generated")
    if ctx.generated.inputs is not None:
        src = ctx.floats("inputs")[:, :3]
    else:
        src = ctx.floats("reference")[:len(gen)]
        gen = gen[:len(src)]
    d = identity_distance(src, gen)
    found = ~np.isnan(d)
    if not found.any():
        raise ConfigError(f"identity: no face found in any of the {len(d)} image pairs; is this a face dataset?")
    return {"identity_distance": float(d[found].mean()),
            "identity_same_person": float((d[found] < SAME_PERSON_DISTANCE).mean()),
            "identity_faces": float(found.mean())}
