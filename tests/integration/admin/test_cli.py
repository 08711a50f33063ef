"""The administrator's commands against a real redis-server."""

from pathlib import Path

from support import AuditSink, RedisServer, run_cli, write_config


def test_grant_then_list_shows_address_user_and_seconds_left(config_file: Path) -> None:
    run_cli("grant", "2001:DB8::7", "--user", "alice", "--lifetime", "600", config=config_file)
    run_cli("grant", "192.0.2.7", config=config_file)
    lines = run_cli("list", config=config_file).stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        ["192.0.2.7", "-"],
        ["2001:db8::7", "alice"],
    ]
    assert 1790 <= int(lines[0].split("\t")[2]) <= 1800
    assert 590 <= int(lines[1].split("\t")[2]) <= 600


def test_check_prints_the_rcpt_answer(config_file: Path) -> None:
    assert run_cli("check", "192.0.2.7", config=config_file).stdout == "DUNNO\n"
    run_cli("grant", "192.0.2.7", "--user", "bob", config=config_file)
    result = run_cli("check", "::ffff:192.0.2.7", config=config_file)
    assert result.stdout == "OK\n"
    assert "bob" in result.stderr


def test_check_prints_defer_when_redis_is_down(
    config_file: Path, redis_server: RedisServer
) -> None:
    redis_server.stop()
    assert run_cli("check", "192.0.2.7", config=config_file).stdout.startswith("DEFER_IF_REJECT ")


def test_revoke_removes_and_says_when_there_was_nothing(config_file: Path) -> None:
    run_cli("grant", "192.0.2.7", config=config_file)
    run_cli("revoke", "192.0.2.7", config=config_file)
    assert run_cli("list", config=config_file).stdout == ""
    result = run_cli("revoke", "192.0.2.7", config=config_file, check=False)
    assert result.returncode == 1 and "was not authorized" in result.stderr


def test_grant_refuses_invalid_and_local_addresses(config_file: Path) -> None:
    for address in ("not-an-address", "224.0.0.1", "127.0.0.1", "::1", "fe80::1"):
        result = run_cli("grant", address, config=config_file, check=False)
        assert result.returncode == 2, address
    assert run_cli("list", config=config_file).stdout == ""


def test_a_shorter_grant_never_shortens_an_authorization(config_file: Path) -> None:
    run_cli("grant", "192.0.2.7", "--lifetime", "600", config=config_file)
    run_cli("grant", "192.0.2.7", "--lifetime", "5", config=config_file)
    seconds_left = int(run_cli("list", config=config_file).stdout.split("\t")[2])
    assert seconds_left > 500


def test_grant_and_revoke_are_audited(config_file: Path, audit_sink: AuditSink) -> None:
    run_cli("grant", "192.0.2.7", "--user", "carol", config=config_file)
    run_cli("revoke", "192.0.2.7", config=config_file)
    events = [
        (e.get("PBS_EVENT"), e.get("PBS_CLIENT_ADDRESS")) for e in audit_sink.collect(until=2)
    ]
    assert events == [("grant", "192.0.2.7"), ("revoke", "192.0.2.7")]


def test_an_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", f'[redis]\nurl = "unix://{tmp_path}/absent.sock"\n')
    result = run_cli("list", config=config, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("pbs-activated: Redis:")
    assert "Traceback" not in result.stderr


def test_a_broken_config_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", "[redis]\nurl = 5\n")
    result = run_cli("list", config=config, check=False)
    assert result.returncode == 2
    assert "[redis] url must be a string" in result.stderr


def test_the_module_and_the_command_are_the_same(config_file: Path) -> None:
    assert "grant" in run_cli("--help").stdout
