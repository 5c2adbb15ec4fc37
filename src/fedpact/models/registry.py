"""Turning a task's ModelSpec into a model: built-ins by name, anything else from plugins.

Plugins are Python packages the participant installed that declare an entry point in the
``fedpact.models`` group; a task can only name them, never ship code. torch is imported
only when a torch model is built, so NumPy-only participants never load it.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fedpact.common.definition import BUILTIN_MODELS, DataSchema, ModelSpec
from fedpact.common.errors import UnknownComponent
from fedpact.common.extras import MODEL_EXTRAS, require
from fedpact.models.base import Model, ModelConfigError
from fedpact.models.kmeans import DEFAULT_SEED_SAMPLE, KMeans
from fedpact.models.linear import LinearRegression, LogisticRegression
from fedpact.models.softmax import SoftmaxRegression

PLUGIN_GROUP = "fedpact.models"


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def available_models() -> list[str]:
    """Built-in names followed by the plugin names installed here."""
    return list(BUILTIN_MODELS) + sorted(set(_plugins()) - set(BUILTIN_MODELS))


def _number(params: dict[str, Any], key: str, default: float, low: float, high: float | None = None) -> float:
    value = params.get(key, default)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ModelConfigError(f"model parameter {key!r} must be a number {bound}, got {value!r}")
    return float(value)


def _widths(params: dict[str, Any], key: str, default: list[int]) -> list[int]:
    value = params.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    positive = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not value or not positive:
        raise ModelConfigError(f"model parameter {key!r} must be a non-empty list of positive integers, got {value!r}")
    return value


def _plugin_model(spec: ModelSpec, schema: DataSchema, seed: int) -> Model:
    plugins = _plugins()
    if spec.name not in plugins:
        raise UnknownComponent(
            f"model {spec.name!r} is not available here; available models: {', '.join(available_models())}. "
            f"Install the package that provides it (it registers an entry point in the {PLUGIN_GROUP!r} group)."
        )
    try:
        factory = plugins[spec.name].load()
    except Exception as exc:  # a broken plugin must not take the participant down with a traceback
        raise UnknownComponent(f"model plugin {spec.name!r} is installed but failed to load: {exc}") from exc
    model = factory(spec, schema, seed)
    if not isinstance(model, Model):
        raise UnknownComponent(
            f"model plugin {spec.name!r} returned {type(model).__name__}, not a fedpact.models.Model"
        )
    return model


def _count(params: dict[str, Any], key: str, default: int, low: int) -> int:
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ModelConfigError(f"model parameter {key!r} must be an integer >= {low}, got {value!r}")
    return value


def _numpy_model(name: str, params: dict[str, Any], schema: DataSchema, seed: int) -> Model | None:
    """The NumPy built-ins, or None when ``name`` is not one of them."""
    n_features = 1
    for d in schema.sample_shape:
        n_features *= d
    if name == "softmax_regression":
        return SoftmaxRegression(n_features, len(schema.classes), l2=_number(params, "l2", 0.0, 0.0), seed=seed)
    if name == "logistic_regression":
        if len(schema.classes) != 2:
            raise ModelConfigError(f"logistic_regression is binary; the task has {len(schema.classes)} classes")
        return LogisticRegression(n_features, l2=_number(params, "l2", 0.0, 0.0), seed=seed)
    if name == "linear_regression":
        return LinearRegression(n_features, l2=_number(params, "l2", 0.0, 0.0), seed=seed)
    if name == "kmeans":
        _count(params, "seed_sample", DEFAULT_SEED_SAMPLE, 0)
        return KMeans(n_features, _count(params, "k", 8, 2), seed=seed)
    return None


def build_model(spec: ModelSpec | None, schema: DataSchema, seed: int = 0) -> Model:
    """A fresh model for ``schema``'s samples and task kind, initialised reproducibly from ``seed``."""
    if spec is None:
        raise ModelConfigError(f"a {schema.task} task has no model to build")
    params = dict(spec.params)
    built = _numpy_model(spec.name, params, schema, seed)
    if built is not None:
        return built
    n_classes = len(schema.classes)
    if spec.name in MODEL_EXTRAS:
        require(MODEL_EXTRAS[spec.name], f"model {spec.name!r}")
    if spec.name == "mlp":
        from fedpact.models.torch_nets import MLPModel

        return MLPModel(
            schema.sample_shape,
            n_classes,
            hidden=_widths(params, "hidden", [128]),
            dropout=_number(params, "dropout", 0.0, 0.0, 1.0),
            seed=seed,
            regression=schema.task == "regression",
        )
    if spec.name == "cnn":
        if schema.kind != "image":
            raise ModelConfigError("model 'cnn' needs image data (data.kind: image with a shape)")
        from fedpact.models.torch_nets import CNNModel

        hidden = _widths(params, "hidden", [128])
        if len(hidden) != 1:
            raise ModelConfigError(f"cnn parameter 'hidden' is one layer width, got {params['hidden']!r}")
        return CNNModel(
            schema.sample_shape,
            n_classes,
            channels=_widths(params, "channels", [32, 64]),
            hidden=hidden[0],
            dropout=_number(params, "dropout", 0.25, 0.0, 1.0),
            seed=seed,
        )
    return _plugin_model(spec, schema, seed)
