"""Every command has help with an example."""

import pytest

from groundwatch.cli import build_parser, main

COMMANDS = ["edge", "simulate", "cloud", "demo", "check", "ack", "profiles",
            "check-config", "scan", "read", "write-coil", "test-relay",
            "install-service", "provision", "revoke", "leak-test", "leak-eval",
            "hj212", "users", "maintenance", "command", "firmware", "trend", "flow"]


def test_all_commands_are_listed():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "-h"])
    assert exit_.value.code == 0
    assert f"example: groundwatch {command}" in capsys.readouterr().out
