"""`fedpact algorithms` prints the catalogue the hub validates against."""

from typer.testing import CliRunner

from fedpact.cli.main import app
from fedpact.common.algorithms import CATALOG


def test_the_cli_lists_every_strategy_with_its_parameters_and_modes() -> None:
    result = CliRunner().invoke(app, ["algorithms"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for name, info in CATALOG.items():
        assert name in result.output
        for p in info.params:
            assert f"{p.name}: {p.type}" in result.output, (name, p.name)
    assert "beta1: float = 0.9 (in [0, 1))" in result.output
    help_text = CliRunner().invoke(app, ["task", "create", "--help"], env={"COLUMNS": "200"}).output
    assert "fedpact algorithms" in help_text
