"""Structured journal records: the native datagram format, the handler, reading them back."""

import json
import logging
import socket
import struct
import subprocess

from servicehub.journal import (
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


def entry(cursor, when, **fields):
    return json.dumps({"__CURSOR": cursor, "__REALTIME_TIMESTAMP": str(int(when * 1e6)), **fields})


def test_parse_entries_reads_events_and_the_last_cursor():
    out = "\n".join(
        [
            entry("c1", 100.5, SERVICEHUB_EVENT="spawned", SERVICEHUB_APP="a", SERVICEHUB_SLUG="s"),
            entry("c2", 101, MESSAGE="not ours"),
            entry("c3", 102, SERVICEHUB_EVENT=[1, 2], SERVICEHUB_APP="a", SERVICEHUB_SLUG="s"),
            "garbage",
        ]
    )
    events, cursor = parse_entries(out)
    assert [(e.time, e.event, e.app, e.slug) for e in events] == [(100.5, "spawned", "a", "s")]
    assert cursor == "c3"


def test_read_events_asks_after_the_cursor_and_survives_a_missing_journal():
    calls = []

    def run(argv):
        calls.append(argv)
        out = entry("c9", 5, SERVICEHUB_EVENT="ready", SERVICEHUB_APP="a", SERVICEHUB_SLUG="s")
        return subprocess.CompletedProcess(argv, 0, out + "\n", "")

    events, cursor = read_events("hub1", "c1", 0, run=run)
    assert cursor == "c9" and events[0].event == "ready"
    assert "SERVICEHUB_HUB=hub1" in calls[0] and "--after-cursor=c1" in calls[0]
    read_events("hub1", None, 1234.9, run=run)
    assert "--since=@1234" in calls[1]

    def missing(argv):
        raise FileNotFoundError("journalctl")

    assert read_events("hub1", "c1", 0, run=missing) == ([], "c1")

    def failing(argv):
        return subprocess.CompletedProcess(argv, 1, "", "No journal files were opened")

    assert read_events("hub1", "c1", 0, run=failing) == ([], "c1")


def test_journal_stream_must_be_this_processes_stderr(tmp_path, monkeypatch):
    from servicehub.journal import stderr_is_journal

    with open(tmp_path / "stderr", "w") as fake_stderr:
        monkeypatch.setattr("sys.stderr", fake_stderr)
        st = (tmp_path / "stderr").stat()
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stderr_is_journal({})
