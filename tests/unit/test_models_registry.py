import numpy as np
import pytest

from fedpact.common.definition import BUILTIN_MODELS, DataSchema, ModelSpec
from fedpact.common.errors import UnknownComponent
from fedpact.data import digits_schema
from fedpact.models import Model, ModelConfigError, SoftmaxRegression, available_models, build_model, registry

IMAGE = DataSchema(kind="image", shape=[1, 8, 8], classes=list(range(10)))


class _FakeEntryPoint:
    def __init__(self, name, target):
        self.name, self._target = name, target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_builds_builtins():
    soft = build_model(ModelSpec(name="softmax_regression", params={"l2": 0.01}), digits_schema())
    assert isinstance(soft, SoftmaxRegression) and soft.l2 == 0.01
    mlp = build_model(ModelSpec(name="mlp", params={"hidden": [16, 8]}), digits_schema(), seed=1)
    assert [w.shape for w in mlp.get_weights().values()] == [(16, 64), (16,), (8, 16), (8,), (10, 8), (10,)]
    cnn = build_model(ModelSpec(name="cnn", params={"channels": [4], "hidden": 8}), IMAGE)
    assert cnn.get_weights()["fc.weight"].shape == (8, 4 * 4 * 4)
    a = build_model(ModelSpec(name="mlp"), digits_schema(), seed=3).get_weights()
    b = build_model(ModelSpec(name="mlp"), digits_schema(), seed=3).get_weights()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_softmax_on_images_flattens():
    model = build_model(ModelSpec(name="softmax_regression"), IMAGE)
    assert model.get_weights()["weight"].shape == (10, 64)


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("mlp", {"hidden": [0]}, "'hidden' must be a non-empty list of positive integers"),
        ("mlp", {"dropout": 1.5}, r"'dropout' must be a number in \[0.0, 1.0\)"),
        ("softmax_regression", {"l2": -1}, "'l2' must be a number >= 0.0"),
        ("cnn", {"hidden": [8, 8]}, "one layer width"),
    ],
)
def test_bad_params(name, params, message):
    schema = IMAGE if name == "cnn" else digits_schema()
    with pytest.raises(ModelConfigError, match=message):
        build_model(ModelSpec(name=name, params=params), schema)


def test_cnn_needs_images():
    with pytest.raises(ModelConfigError, match="needs image data"):
        build_model(ModelSpec(name="cnn"), digits_schema())


def test_unknown_plugin_lists_available(monkeypatch):
    monkeypatch.setattr(registry, "_plugins", lambda: {})
    with pytest.raises(UnknownComponent, match="'acme.forest' is not available here; available models: softmax_regression, mlp, cnn"):
        build_model(ModelSpec(name="acme.forest"), digits_schema())


def test_plugin_is_built_from_entry_point(monkeypatch):
    calls = []

    def factory(spec, schema, seed):
        calls.append((spec.name, schema.n_features, seed))
        return SoftmaxRegression(schema.n_features, len(schema.classes))

    plugins = {
        "acme.linear": _FakeEntryPoint("acme.linear", factory),
        "acme.broken": _FakeEntryPoint("acme.broken", ImportError("no module named acme")),
        "acme.wrong": _FakeEntryPoint("acme.wrong", lambda spec, schema, seed: object()),
    }
    monkeypatch.setattr(registry, "_plugins", lambda: plugins)
    assert available_models() == [*BUILTIN_MODELS, "acme.broken", "acme.linear", "acme.wrong"]
    model = build_model(ModelSpec(name="acme.linear"), digits_schema(), seed=4)
    assert isinstance(model, Model) and calls == [("acme.linear", 64, 4)]
    with pytest.raises(UnknownComponent, match="installed but failed to load: no module named acme"):
        build_model(ModelSpec(name="acme.broken"), digits_schema())
    with pytest.raises(UnknownComponent, match="returned object, not a fedpact.models.Model"):
        build_model(ModelSpec(name="acme.wrong"), digits_schema())


def test_real_entry_point_lookup_runs():
    assert available_models()[:3] == ["softmax_regression", "mlp", "cnn"]
