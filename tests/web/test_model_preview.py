"""The model page draws a clustering or regression model's preview metadata in a real Chromium.

The models are stored through the hub's real API, as the aggregator stores a final model,
with preview metadata built by fedpact.models.preview from real fitted models.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

from fedpact.client.hub import HubClient
from fedpact.common.tensors import encode_weights
from fedpact.hub import EmbeddedHub
from fedpact.models import KMeans, LinearRegression
from fedpact.models.kmeans import initial_centroids
from fedpact.models.preview import build_preview
from hub_fixtures import fast_config

PASSWORD = "preview-pass-123"
LAPTOP = {"width": 1280, "height": 900}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as h:
        yield h


def _store(alice: HubClient, name: str, definition: dict[str, Any], weights: dict[str, np.ndarray],
           preview: dict[str, Any] | None) -> int:
    alice.create_task(name, definition, "preview test")
    blob = alice.upload_blob(name, encode_weights(weights, {}))
    metadata: dict[str, Any] = {"task": name, "model": definition["model"], "data": definition["data"], "rounds": 1}
    if preview is not None:
        metadata["preview"] = preview
    return int(alice.register_model(name, blob=blob, metadata=metadata, contributors=["alice"], rounds=1,
                                    metrics={})["id"])


def _models(alice: HubClient) -> dict[str, int]:
    x = load_iris().data
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    km = KMeans(4, 3)
    km.set_centroids(initial_centroids(x, 3, seed=0))
    for _ in range(10):
        km.fit(x, np.zeros(len(x)), epochs=1, batch_size=1, lr=1.0)
    clusters = {"model": {"name": "kmeans", "params": {"k": 3}}, "quorum": 1,
                "data": {"task": "clustering", "features": 4}}
    xd, yd = load_diabetes(return_X_y=True)
    lr = LinearRegression(10)
    lr.fit(xd, (yd - yd.mean()) / yd.std(), epochs=100, batch_size=32, lr=0.1)
    regression = {"model": {"name": "linear_regression"}, "quorum": 1,
                  "data": {"task": "regression", "features": 10, "label": "progression"}}
    return {
        "clusters": _store(alice, "iris-clusters", clusters, km.get_weights(),
                           build_preview(km, x, None, task="clustering")),
        "regression": _store(alice, "diabetes", regression, lr.get_weights(),
                             build_preview(lr, xd, yd, task="regression", label="progression",
                                           target_scale=(float(yd.mean()), float(yd.std())))),
        "bare": _store(alice, "no-eval", clusters, km.get_weights(), None),
    }


def test_model_page_draws_clusters_and_predictions(hub: EmbeddedHub, browser: Any, artifacts: Path,
                                                    page_errors: Any) -> None:
    from playwright.sync_api import expect

    alice = HubClient(hub.url)
    alice.register("alice", PASSWORD, "Acme")
    alice.login("alice", PASSWORD)
    ids = _models(alice)
    ctx = browser.new_context(viewport=LAPTOP)
    page = page_errors.watch(ctx.new_page())
    page.set_default_timeout(15_000)
    try:
        page.goto(hub.url + "/")
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()

        page.goto(f"{hub.url}/#/model/{ids['clusters']}")
        expect(page.get_by_role("heading", name="Clusters on the first two principal components")).to_be_visible()
        expect(page.locator("#preview-caption")).to_contain_text("150 of 150 evaluation samples")
        drawn = page.evaluate("""() => {
            const c = Chart.getChart(document.getElementById('preview-chart'));
            return c.data.datasets.map((d) => [d.label, d.data.length]);
        }""")
        assert [label for label, _ in drawn] == ["cluster 0", "cluster 1", "cluster 2", "centroids"]
        assert sum(n for label, n in drawn if label.startswith("cluster")) == 150 and drawn[-1][1] == 3
        assert page.locator("#confusion-matrix").count() == 0
        page.screenshot(path=str(artifacts / "model-preview-clusters.png"), full_page=True)

        page.goto(f"{hub.url}/#/model/{ids['regression']}")
        expect(page.get_by_role("heading", name="Predicted against true values")).to_be_visible()
        axes = page.evaluate("""() => {
            const c = Chart.getChart(document.getElementById('preview-chart'));
            return [c.options.scales.x.title.text, c.options.scales.y.title.text, c.data.datasets[0].data.length];
        }""")
        assert axes == ["true progression", "predicted progression", 300]
        page.screenshot(path=str(artifacts / "model-preview-regression.png"), full_page=True)

        page.goto(f"{hub.url}/#/model/{ids['bare']}")
        expect(page.locator("#preview-missing")).to_contain_text("no evaluation data")
        assert page.locator("#preview-chart").count() == 0

        # the task pages of kinds without a label or a model, and a declared preparation
        alice.create_task("site-stats", {"data": {"task": "analytics", "features": ["age", "bp"]},
                                         "analytics": {"bins": 10}}, "statistics only")
        alice.create_task("heart-prep", {"model": {"name": "logistic_regression"}, "data": {
            "features": ["age", "cp"], "label": "num", "classes": [0, 1], "header": False,
            "columns": ["age", "cp", "num"], "missing": "impute", "impute": "median",
            "categorical": {"cp": [1, 2, 3, 4]}}}, "declared preparation")
        page.goto(f"{hub.url}/#/task/site-stats")
        expect(page.locator("#cmd-participate")).to_have_text("fedpact participate site-stats --data your-data.csv")
        expect(page.get_by_text("none (statistics only)")).to_be_visible()
        expect(page.locator("#participate-reads")).not_to_contain_text("label column")
        page.goto(f"{hub.url}/#/task/heart-prep")
        expect(page.locator("#participate-reads")).to_contain_text(
            'label column "num"; no header row; columns age, cp, num; missing values imputed with the federated '
            "median; one-hot: cp (1, 2, 3, 4)")
        page.screenshot(path=str(artifacts / "task-declared-preparation.png"), full_page=True)
    finally:
        ctx.close()
    assert page_errors.unexpected() == []
