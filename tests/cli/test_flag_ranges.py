"""Integer flags out of their field's range are argparse usage errors (exit 2, one line),
not a traceback from protobuf or a socket, nor a silently different port."""

from __future__ import annotations

import pytest

from gyoza_grpc import cli


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "99999"], "argument --port: 99999 is not a port (0..65535)"),
        (["serve", "--port", "-1"], "argument --port: -1 is not a port (0..65535)"),
        (["gateway", "--port", "65536"], "argument --port: 65536 is not a port (0..65535)"),
        (["worker", "--cpu", str(2**31)], f"argument --cpu: {2**31} is out of range"),
        (["worker", "--ram-mb", "x"], "argument --ram-mb: invalid int32 value: 'x'"),
        (["runs", "list", "--limit", str(2**31)], f"argument --limit: {2**31} is out of range"),
    ],
)
def test_out_of_range_flags_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[-1], err
    assert "Traceback" not in err


def test_the_ends_of_the_ranges_pass() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["serve", "--port", "65535"]).port == 65535
    assert parser.parse_args(["gateway", "--port", "0"]).port == 0
    assert parser.parse_args(["worker", "--cpu", str(2**31 - 1)]).cpu == 2**31 - 1


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["worker", "--worker-id", "\udcff", "--command", "true"], "--worker-id"),
        (["gateway", "--target", "\udcff"], "--target"),
        (["serve", "--database-url", "sqlite+aiosqlite:///\udcff.db"], "--database-url"),
    ],
)
def test_arguments_that_are_not_utf8_are_usage_errors(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are not UTF-8 reach Python as surrogates (here: the byte 0xff)."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"gyoza-grpc: {flag}: "), err
    assert "is not valid UTF-8" in err
    assert "Traceback" not in err
