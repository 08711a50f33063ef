"""audit.entry: journald's native format, the same whichever encoding path it takes."""

from hypothesis import given, settings
from hypothesis import strategies as st
from support import decode_entry

from pbs_activated import audit


def test_an_entry_has_message_priority_identifier_and_its_nonempty_fields() -> None:
    payload = audit.entry(
        audit.INFO, "OK for 192.0.2.10", PBS_ACTION="OK", PBS_USER="", PBS_QUEUE_ID=None, N=3
    )
    assert payload == (
        b"MESSAGE=OK for 192.0.2.10\nPRIORITY=6\nSYSLOG_IDENTIFIER=pbs-activated\n"
        b"PBS_ACTION=OK\nN=3\n"
    )


def test_a_value_with_a_newline_takes_the_binary_form() -> None:
    payload = audit.entry(audit.WARNING, "two\nlines", PBS_SENDER="a\nb", PBS_ACTION="DUNNO")
    assert b"MESSAGE\n" + (9).to_bytes(8, "little") + b"two\nlines\n" in payload
    assert decode_entry(payload) == {
        "MESSAGE": "two\nlines",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "pbs-activated",
        "PBS_SENDER": "a\nb",
        "PBS_ACTION": "DUNNO",
    }


values = st.one_of(st.none(), st.integers(), st.text(max_size=20))


@settings(max_examples=300)
@given(st.text(max_size=30), st.dictionaries(st.sampled_from(["PBS_A", "PBS_B", "PBS_C"]), values))
def test_every_entry_decodes_to_what_was_given(message: str, fields: dict[str, object]) -> None:
    expected = {"MESSAGE": message, "PRIORITY": "6", "SYSLOG_IDENTIFIER": "pbs-activated"}
    expected.update((k, str(v)) for k, v in fields.items() if v is not None and v != "")
    decoded = decode_entry(audit.entry(audit.INFO, message, **fields))
    replaced = {k: v.encode("utf-8", "replace").decode() for k, v in expected.items()}
    assert decoded == replaced
