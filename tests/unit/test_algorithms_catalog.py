"""The strategy catalogue: one declaration read by definition validation, the hub, the CLI and the docs."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from fedpact.algorithms.strategies import BUILTIN_FACTORIES, get_aggregator
from fedpact.common.algorithms import CATALOG, PRIVACY_MODES, catalog
from fedpact.common.definition import AlgorithmSpec, parse_definition

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _definition(algorithm: dict, mode: str = "open", min_participants: int = 2, quorum: int = 2) -> dict:
    privacy: dict = {"mode": mode}
    if mode in ("dp", "secure+dp"):
        privacy.update(clip_norm=1.0, noise_multiplier=1.0)
    return {"model": {"name": "mlp"}, "algorithm": algorithm, "privacy": privacy, "quorum": quorum,
            "min_participants": min_participants, "data": {"features": 4, "classes": [0, 1]}}


def test_every_declared_strategy_is_implemented_with_its_defaults() -> None:
    assert set(BUILTIN_FACTORIES) == set(CATALOG)
    for name, info in CATALOG.items():
        strategy = get_aggregator(AlgorithmSpec(name=name))
        assert strategy.info is info, name
    served = catalog()
    assert [a["name"] for a in served] == list(CATALOG)
    adam = next(a for a in served if a["name"] == "fedadam")
    assert {p["name"]: p["default"] for p in adam["params"]} == {
        "server_learning_rate": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}


@pytest.mark.parametrize(("params", "message"), [
    ({"lr": 0.1}, "algorithm 'fedadam' has no parameter(s) lr; it accepts server_learning_rate, beta1, beta2, tau"),
    ({"beta1": 1.0}, "algorithm 'fedadam' parameter 'beta1' must be in [0, 1), got 1.0"),
    ({"tau": 0}, "algorithm 'fedadam' parameter 'tau' must be in (0, 10], got 0.0"),
    ({"server_learning_rate": "fast"}, "must be a number, got 'fast'"),
    ({"server_learning_rate": float("nan")}, "must be finite"),
])
def test_parameters_are_checked_against_their_declaration(params: dict, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_definition(_definition({"name": "fedadam", "params": params}))
    assert message in str(err.value)


def test_strategies_that_need_individual_updates_are_refused_where_the_mode_hides_them() -> None:
    for name in ("median", "trimmed_mean", "krum", "multi_krum"):
        for mode in ("secure", "encrypted", "dp", "secure+dp"):
            with pytest.raises(ValidationError, match=re.escape(f"algorithm '{name}' cannot run under privacy mode '{mode}'")):
                parse_definition(_definition({"name": name}, mode, min_participants=5, quorum=5))
    with pytest.raises(ValidationError, match="needs each participant's update on its own"):
        parse_definition(_definition({"name": "median"}, "secure"))
    with pytest.raises(ValidationError, match="keeps the model encrypted"):
        parse_definition(_definition({"name": "fedadam"}, "encrypted"))
    for mode in ("open", "dp", "secure", "secure+dp"):
        assert parse_definition(_definition({"name": "fedyogi"}, mode)).algorithm.name == "fedyogi"


def test_krum_needs_enough_participants_in_every_round() -> None:
    with pytest.raises(ValidationError, match=r"with f=1 needs at least 2f \+ 3 = 5 updates"):
        parse_definition(_definition({"name": "krum"}, min_participants=4, quorum=4))
    with pytest.raises(ValidationError, match="averages m=5 updates"):
        parse_definition(_definition({"name": "multi_krum", "params": {"f": 1, "m": 5}}, min_participants=5, quorum=5))
    assert parse_definition(_definition({"name": "multi_krum", "params": {"m": 4}}, min_participants=5, quorum=5))


def test_every_strategy_and_parameter_is_documented() -> None:
    text = (DOCS / "algorithms.md").read_text()
    strategies = text[text.index("## Strategies"):]
    for name, info in CATALOG.items():
        assert re.search(rf"^### `{name}`", strategies, re.M), name
        section = strategies[strategies.index(f"### `{name}`"):]
        section = section[: section.find("\n### ", 4) if "\n### " in section[4:] else len(section)]
        for p in info.params:
            assert f"`{p.name}`" in section, (name, p.name)
        assert all(m in PRIVACY_MODES for m in info.privacy_modes)
    table = (DOCS / "task-definition.md").read_text()
    for name in CATALOG:
        assert f"`{name}`" in table, name
