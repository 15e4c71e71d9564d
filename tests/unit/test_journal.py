"""Structured journal records: the native datagram format, the handler, reading them back."""

import json
import logging
import socket
import struct
import subprocess

import pytest

from servicehub.journal import (
    DaemonSource,
    JournalHandler,
    encode,
    event,
    parse_entries,
    read_events,
    setup_logging,
)


def decode(datagram: bytes) -> dict[str, str]:
    """journald's side of the native protocol."""
    fields, rest = {}, datagram
    while rest:
        line, _, tail = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = tail
        else:
            (size,) = struct.unpack("<Q", tail[:8])
            fields[line.decode()] = tail[8 : 8 + size].decode()
            rest = tail[8 + size + 1 :]
    return fields


def test_encode_uses_the_binary_form_for_values_with_newlines():
    data = encode({"MESSAGE": "two\nlines", "SERVICEHUB_APP": "whoami"})
    assert decode(data) == {"MESSAGE": "two\nlines", "SERVICEHUB_APP": "whoami"}
    assert b"SERVICEHUB_APP=whoami\n" in data


def test_handler_sends_fields_to_the_socket(tmp_path):
    path = tmp_path / "socket"
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(str(path))
    handler = JournalHandler(path)
    logger = logging.getLogger("test.journal")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "spawned %s", "x", extra=event("spawned", app="whoami", slug="a-b", user="é\nx", n=None)
        )
        fields = decode(journald.recv(65536))
    finally:
        logger.removeHandler(handler)
        handler.close()
        journald.close()
    assert fields["MESSAGE"] == "spawned x"
    assert fields["PRIORITY"] == "4" and fields["SYSLOG_IDENTIFIER"] == "servicehub"
    assert fields["SERVICEHUB_EVENT"] == "spawned"
    assert fields["SERVICEHUB_APP"] == "whoami" and fields["SERVICEHUB_USER"] == "é\nx"
    assert "SERVICEHUB_N" not in fields


def test_handler_falls_back_when_the_socket_is_gone(tmp_path):
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = JournalHandler(tmp_path / "absent", fallback=Keep())
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None))
    handler.close()
    assert records == ["hello"]


def test_without_journald_logging_goes_to_stderr(tmp_path):
    handler = setup_logging(False, {"JOURNAL_STREAM": "1:2"}, path=tmp_path / "absent")
    assert isinstance(handler, logging.StreamHandler)


DAEMON = DaemonSource(unit="servicehub.service", uid=998)
# journald's own fields on the daemon's entries: a client cannot set them (it drops any field
# whose name starts with "_" that a client sends).
TRUSTED = {"_SYSTEMD_UNIT": "servicehub.service", "_UID": "998"}


def entry(cursor, when, **fields):
    return json.dumps({"__CURSOR": cursor, "__REALTIME_TIMESTAMP": str(int(when * 1e6)), **fields})


def ready(cursor, when, **trusted):
    return entry(
        cursor,
        when,
        SERVICEHUB_EVENT="ready",
        SERVICEHUB_APP="a",
        SERVICEHUB_SLUG="s",
        SERVICEHUB_HUB="hub1",
        **trusted,
    )


def test_parse_entries_reads_events_and_the_last_cursor():
    out = "\n".join(
        [
            entry(
                "c1",
                100.5,
                SERVICEHUB_EVENT="spawned",
                SERVICEHUB_APP="a",
                SERVICEHUB_SLUG="s",
                **TRUSTED,
            ),
            entry("c2", 101, MESSAGE="not ours", **TRUSTED),
            entry("c3", 102, SERVICEHUB_EVENT=[1, 2], SERVICEHUB_APP="a", SERVICEHUB_SLUG="s"),
            "garbage",
        ]
    )
    events, cursor = parse_entries(out, DAEMON)
    assert [(e.time, e.event, e.app, e.slug) for e in events] == [(100.5, "spawned", "a", "s")]
    assert (events[0].unit, events[0].uid) == ("servicehub.service", 998)
    assert cursor == "c3"


@pytest.mark.parametrize(
    "trusted",
    [
        {},  # `logger --journald` outside any service: no unit
        {"_UID": "998"},  # the daemon's uid, but not its unit (a shell of that account)
        {"_SYSTEMD_UNIT": "servicehub.service"},  # no uid at all
        {"_SYSTEMD_UNIT": "servicehub.service", "_UID": "65534"},  # nobody, in the unit's cgroup
        {"_SYSTEMD_UNIT": "servicehub.service", "_UID": "0"},  # root (an ExecStartPre=+, say)
        {"_SYSTEMD_UNIT": "user@1000.service", "_UID": "998"},
        {"_SYSTEMD_UNIT": "servicehub.service.evil", "_UID": "998"},
        {"_SYSTEMD_UNIT": "servicehub.service", "_UID": 998},  # journalctl writes strings
        # What a forger would write: journald drops these, so they never look like this.
        {"SYSTEMD_UNIT": "servicehub.service", "UID": "998"},
    ],
    ids=lambda fields: ",".join(f"{k}={v}" for k, v in fields.items()) or "none",
)
def test_forged_entries_are_no_events(trusted):
    forged = ready("c1", 100, **trusted)
    assert parse_entries(forged, DAEMON) == ([], "c1")  # the cursor still moves past them
    assert len(parse_entries(ready("c2", 100, **TRUSTED), DAEMON)[0]) == 1  # control


def test_read_events_asks_journald_for_the_daemons_unit_and_uid():
    calls = []

    def run(argv):
        calls.append(argv)
        # Even if journalctl returned more than the match (it does not), the parser checks.
        out = [ready("c8", 5, _UID="65534"), ready("c9", 5, **TRUSTED)]
        return subprocess.CompletedProcess(argv, 0, "\n".join(out) + "\n", "")

    events, cursor = read_events("hub1", "c1", 0, DAEMON, run=run)
    assert cursor == "c9" and [e.event for e in events] == ["ready"]
    assert {"_SYSTEMD_UNIT=servicehub.service", "_UID=998", "SERVICEHUB_HUB=hub1"} <= set(calls[0])
    assert "--after-cursor=c1" in calls[0]
    read_events("hub1", None, 1234.9, DAEMON, run=run)
    assert "--since=@1234" in calls[1]


def test_read_events_survives_a_missing_journal():
    def missing(argv):
        raise FileNotFoundError("journalctl")

    assert read_events("hub1", "c1", 0, DAEMON, run=missing) == ([], "c1")

    def failing(argv):
        return subprocess.CompletedProcess(argv, 1, "", "No journal files were opened")

    assert read_events("hub1", "c1", 0, DAEMON, run=failing) == ([], "c1")


def test_journal_stream_must_be_this_processes_stderr(tmp_path, monkeypatch):
    from servicehub.journal import stderr_is_journal

    with open(tmp_path / "stderr", "w") as fake_stderr:
        monkeypatch.setattr("sys.stderr", fake_stderr)
        st = (tmp_path / "stderr").stat()
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stderr_is_journal({})
