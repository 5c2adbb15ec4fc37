"""The final model's preview metadata: small, JSON-ready, and faithful to the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from fedpact.models import KMeans, LinearRegression, SoftmaxRegression
from fedpact.models.preview import build_preview, principal_axes, regression_preview


def test_clustering_preview_projects_points_and_centroids_on_two_components() -> None:
    x, _ = make_blobs(1000, centers=3, n_features=5, random_state=0)
    model = KMeans(5, 3)
    model.set_centroids(np.array([x[0], x[400], x[800]]))
    for _ in range(10):
        model.fit(x, np.zeros(len(x)), epochs=1, batch_size=1, lr=1.0)
    preview = build_preview(model, x, None, task="clustering")
    assert preview is not None and preview["kind"] == "clustering" and preview["total"] == 1000
    assert len(preview["points"]) == 300 and len(preview["centroids"]) == 3
    assert {p[2] for p in preview["points"]} == {0, 1, 2}
    assert preview["axes"][0].startswith("PC1 (") and len(json.dumps(preview)) < 20_000
    _, axes, shares = principal_axes(x)
    assert np.allclose(axes @ axes.T, np.eye(2), atol=1e-9) and shares[0] >= shares[1]


def test_regression_preview_maps_predictions_back_to_the_target_unit() -> None:
    model = LinearRegression(1)
    model.set_weights({"weight": np.array([2.0], dtype=np.float32), "bias": np.array([1.0], dtype=np.float32)})
    x = np.array([[0.0], [1.0]])
    preview = build_preview(model, x, np.array([110.0, 130.0]), task="regression", label="price",
                            target_scale=(100.0, 10.0))
    assert preview == {"kind": "regression", "axes": ["true price", "predicted price"],
                       "points": [[110.0, 110.0], [130.0, 130.0]], "total": 2}
    assert build_preview(SoftmaxRegression(1, 2), x, np.array([0, 1]), task="classification") is None
    with pytest.raises(ValueError, match="as many predictions"):
        regression_preview(np.zeros(3), np.zeros(2))
