"""The recording downstream fixture itself: records, refuses on demand, restarts, STARTTLS."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from tests.support.downstream import Downstream

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


def send(
    server: Downstream, rcpts: list[str], starttls: bool = False
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        if starttls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client.starttls(context=context)
        return client.sendmail("a@example.org", rcpts, MESSAGE)


def test_records_envelope_and_bytes(downstream: Downstream) -> None:
    send(downstream, ["b@example.test", "c@example.test"])
    [message] = downstream.wait_for(1)
    assert message.mail_from == "a@example.org"
    assert message.rcpt_tos == ("b@example.test", "c@example.test")
    assert message.data == MESSAGE
    assert not message.tls


def test_refuses_per_recipient_and_at_data(downstream: Downstream) -> None:
    downstream.fail_rcpt("550 5.1.1 No such user", rcpt="B@example.test")
    refused = send(downstream, ["b@example.test", "c@example.test"])
    assert refused == {"b@example.test": (550, b"5.1.1 No such user")}
    assert downstream.wait_for(1)[0].rcpt_tos == ("c@example.test",)
    downstream.fail_data("451 4.3.0 Try later")
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(downstream, ["c@example.test"])
    assert info.value.smtp_code == 451
    assert len(downstream.messages) == 1


def test_goes_away_and_comes_back_on_the_same_port(downstream: Downstream) -> None:
    port = downstream.port
    downstream.stop()
    with pytest.raises(OSError):
        send(downstream, ["b@example.test"])
    downstream.start()
    assert downstream.port == port
    send(downstream, ["b@example.test"])
    assert len(downstream.wait_for(1)) == 1


def test_starttls_is_recorded(downstream_tls: Downstream) -> None:
    send(downstream_tls, ["b@example.test"], starttls=True)
    [message] = downstream_tls.wait_for(1)
    assert message.tls
