"""The ``paysim`` command explains itself: a bare ``paysim`` prints help (it does
not start a server), and every subcommand's ``--help`` has a description."""

from __future__ import annotations

import pytest

from paysim import cli

SUBCOMMANDS = ["serve", "worker", "dev", "webhook", "bench", "chaos"]


def test_bare_paysim_prints_help_and_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main([])
    out = capsys.readouterr().out
    assert status == 2
    assert out.startswith("usage: paysim")
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("command", [*SUBCOMMANDS, "webhook verify"])
def test_every_subcommand_has_a_description(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command.split(), "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    usage, _, rest = out.partition("\n\n")
    assert usage.startswith(f"usage: paysim {command}")
    description = rest.split("\n\n")[0]
    # argparse puts the description between the usage and the first argument group
    assert not description.startswith(("positional arguments", "options")), out
    assert len(description.split()) >= 5, out


def test_dev_takes_every_port_it_listens_on(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["dev", "--help"])
    out = capsys.readouterr().out
    for option in [
        "--grpc-port",
        "--http-port",
        "--worker-port",
        "--receiver-port",
        "--reservations-port",
    ]:
        assert option in out
