from activation import PolicyService
from support import RedisServer, run_cli


def test_granted_address_gets_ok_on_a_reused_connection(policy_service: PolicyService, redis_server: RedisServer, config_file) -> None:
    run_cli("grant", "192.0.2.10", "--user", "alice", config=config_file)
    client = policy_service.connect()
    assert client.ask() == "OK"
    assert client.ask(client_address="192.0.2.99") == "DUNNO"
    assert client.ask(protocol_state="DATA") == "DUNNO"
    client.close()
    assert policy_service.wait_for_no_handlers()
