"""The phishing checks one by one (brand, lookalike, link, harvest, sender) on small
messages: what each matches, what it leaves alone, and that every symbol names what matched."""

from __future__ import annotations

import asyncio
import base64
import time

from gateway.checks.brands import BrandCheck
from gateway.checks.harvest import HarvestCheck
from gateway.checks.links import LinkCheck
from gateway.checks.lookalike import LookalikeCheck
from gateway.checks.sender import SenderCheck
from gateway.config import SHIPPED_RULES_DIR
from gateway.model import CheckResult, Connection, DmarcFacts, Envelope, Transaction
from gateway.pipeline.check import Check

OURS = ("example.org",)


def tx(headers: str, body: str = "hi", sender: str = "", dmarc: str = "none") -> Transaction:
    raw = (headers.strip() + "\r\n\r\n" + body).replace("\n", "\r\n").replace("\r\r", "\r")
    results = {"dmarc": CheckResult("dmarc", facts=DmarcFacts(dmarc, ""))}  # type: ignore[arg-type]
    return Transaction(
        "t",
        Connection("t", "198.51.100.1"),
        Envelope(sender, ("a@example.org",)),
        raw.encode(),
        results,
    )


def run(check: Check, transaction: Transaction) -> dict[str, str]:
    result = asyncio.run(check.run(transaction))
    return {s.name: s.reason for s in result.symbols}


def html(body: str, extra: str = "") -> tuple[str, str]:
    return f"Content-Type: text/html; charset=utf-8\n{extra}", body


BRAND = BrandCheck(SHIPPED_RULES_DIR, OURS)


def test_brand_in_display_name_from_another_domain() -> None:
    found = run(BRAND, tx('From: "PayPal" <service@pp-help.example>\nSubject: Account limited'))
    assert found == {
        "BRAND_DISPLAY_NAME": "name='PayPal' brand=paypal from=service@pp-help.example"
    }
    assert run(BRAND, tx('From: "PayPal" <service@paypal.com>\nSubject: Receipt')) == {}
    # "Dropbox Sign" names Dropbox and HelloSign: the mail is HelloSign's own.
    assert run(BRAND, tx('From: "Dropbox Sign" <noreply@mail.hellosign.com>\nSubject: x')) == {}
    # The brand's own mail naming another brand is no impersonation of it.
    assert run(BRAND, tx('From: "PayPal" <service@paypal.com>\nSubject: Payment to Hetzner')) == {}


def test_brand_in_subject_only_from_outside_every_brand() -> None:
    found = run(BRAND, tx("From: Bob <bob@shop.example>\nSubject: Your DocuSign envelope"))
    assert set(found) == {"BRAND_SUBJECT"}


def test_our_own_domain_counts_only_with_dmarc_failing() -> None:
    headers = 'From: "IT Support" <it@example.org>\nSubject: migration'
    assert set(run(BRAND, tx(headers, dmarc="fail"))) == {"BRAND_OWN_DOMAIN"}
    assert run(BRAND, tx(headers, dmarc="none")) == {}  # no record: our PBX, our scanner
    assert run(BRAND, tx(headers, dmarc="pass")) == {}
    named = run(BRAND, tx('From: "example.org Helpdesk" <x@mail.example>\nSubject: quota'))
    assert set(named) == {"BRAND_OWN_NAME"}


def test_delivery_reports_carry_the_reporting_servers_name() -> None:
    headers = (
        "From: Microsoft Outlook <MicrosoftExchange1@contoso.example>\nSubject: Undeliverable\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"'
    )
    assert run(BRAND, tx(headers, "--b\r\n\r\nx\r\n--b--\r\n")) == {}


LOOKALIKE = LookalikeCheck(SHIPPED_RULES_DIR, OURS)


def test_lookalike_from_reply_to_sender_and_link() -> None:
    headers, body = html(
        '<a href="https://netflix-restore.example/x">Update</a>',
        "From: Netflix <info@netfl1x.com>\nReply-To: x@paypa1-help.com\nSubject: hold\n",
    )
    found = run(LOOKALIKE, tx(headers, body, sender="b@docusing.net"))
    assert set(found) == {
        "LOOKALIKE_FROM",
        "LOOKALIKE_REPLY_TO",
        "LOOKALIKE_SENDER",
        "LOOKALIKE_LINK",
    }
    assert found["LOOKALIKE_FROM"] == "from=netfl1x.com kind=edit-distance imitates=netflix"
    assert "imitates=docusign" in found["LOOKALIKE_SENDER"]


def test_urls_written_in_plain_text_are_links_too() -> None:
    text = "Confirm your address at https://usps.com-redelivery.xyz/track?id=1 today."
    found = run(LOOKALIKE, tx("From: USPS <a@b.example>", text))
    assert found == {
        "LOOKALIKE_LINK": "link=usps.com-redelivery.xyz kind=brand-domain-prefix imitates=usps"
    }


def test_brand_domains_are_no_lookalikes() -> None:
    headers, body = html(
        '<a href="https://www.paypal.com/x">https://www.paypal.com</a>'
        '<a href="https://epl.paypal-comms.example/x">Offers</a>'  # another name of its own
    )
    headers = "From: PayPal <service@paypal.com>\n" + headers
    assert run(LOOKALIKE, tx(headers, body, sender="bounce@mail.paypal.de")) == {}


LINK = LinkCheck(SHIPPED_RULES_DIR, max_link_domains=4)
LINK_WIDE = LinkCheck(SHIPPED_RULES_DIR)


def test_link_text_showing_another_site() -> None:
    headers, body = html('<a href="https://trk-fdx.example/r">https://www.fedex.com/track</a>')
    assert run(LINK_WIDE, tx("From: a@b.example\n" + headers, body)) == {
        "LINK_TEXT_MISMATCH": "text=www.fedex.com href_host=trk-fdx.example"
    }
    # Click tracking and link protection rewrite links: their text names the real target.
    headers, body = html(
        '<a href="https://eur01.safelinks.protection.outlook.com/?url=x">www.shop.example</a>'
        '<a href="https://click.mail.paypal.de/?qs=1">www.paypal.com</a>'
        '<a href="https://www.shop.example/a">Shop now</a>'
        '<a href="https://github.com/o/r/blob/main/requirements.txt">requirements.txt</a>'
        '<a href="https://files.example/x">report.zip</a>'
    )
    assert run(LINK_WIDE, tx("From: a@b.example\n" + headers, body)) == {}


def test_script_uris_hosting_forms_and_many_domains() -> None:
    headers, body = html(
        '<a href="javascript:alert(1)">x</a><a href="https://x.web.app/login">Sign in</a>'
        '<a href="https://docs.google.com/forms/d/e/1/viewform">Form</a>'
        '<a href="https://docs.google.com/document/d/1">Doc</a>'
        '<a href="https://a.example/">a</a><a href="https://b.example/">b</a>'
        '<a href="https://c.example/">c</a>'
    )
    found = run(LINK, tx("From: a@b.example\n" + headers, body))
    assert set(found) == {
        "LINK_SCRIPT_URI",
        "LINK_FREE_HOSTING",
        "LINK_FORM_SERVICE",
        "LINK_MANY_DOMAINS",
    }
    assert found["LINK_FORM_SERVICE"] == "host=docs.google.com listed=docs.google.com/forms"
    assert found["LINK_FREE_HOSTING"] == "host=x.web.app listed=web.app"


HARVEST = HarvestCheck(SHIPPED_RULES_DIR)


def attachment(name: str, ctype: str, data: bytes) -> tuple[str, str]:
    body = (
        "--b\nContent-Type: text/plain\n\nSee attached.\n"
        f'--b\nContent-Type: {ctype}; name="{name}"\nContent-Disposition: attachment; '
        f'filename="{name}"\nContent-Transfer-Encoding: base64\n\n'
        + base64.b64encode(data).decode()
        + "\n--b--\n"
    )
    return 'From: a@b.example\nContent-Type: multipart/mixed; boundary="b"', body


def test_password_forms_and_forms_posting_elsewhere() -> None:
    headers, body = html(
        '<form action="https://collect.example/p"><input type="password"></form>'
        '<form action="https://survey.example/s"><input name="q"></form>'
    )
    found = run(HARVEST, tx("From: a@b.example\n" + headers, body))
    assert found == {
        "HARVEST_PASSWORD_FORM": "action=https://collect.example/p",
        "HARVEST_FORM_OFFSITE": "action_host=survey.example from_domain=b.example",
    }


def test_attached_pages_that_act_and_pages_that_do_not() -> None:
    page = b'<html><body><script>location.href="https://x.example"</script></body></html>'
    found = run(HARVEST, tx(*attachment("fax.svg", "image/svg+xml", page)))
    assert found == {"HARVEST_ACTIVE_PAGE": "file='fax.svg' found='<script'"}
    blob = b"<html><body><p>" + b"QUJD" * 600 + b"</p></body></html>"
    found = run(HARVEST, tx(*attachment("payslip.html", "text/html", blob)))
    assert found == {
        "HARVEST_ACTIVE_PAGE": "file='payslip.html' found='base64 run of 2400 characters'"
    }
    statement = b"<html><body><table><tr><td>Balance 12.00</td></tr></table></body></html>"
    assert run(HARVEST, tx(*attachment("statement.html", "text/html", statement))) == {}


def test_a_page_of_many_near_blob_runs_is_read_in_linear_time() -> None:
    page = (b"A" * 1999 + b".") * 1000  # 2 MB: quadratic matching took minutes
    started = time.perf_counter()
    assert run(HARVEST, tx(*attachment("x.html", "text/html", page))) == {}
    assert time.perf_counter() - started < 2.0


def pdf(uris: list[str], pages: int = 1) -> bytes:
    objects = "".join("<< /Type /Page >>\n" for _ in range(pages))
    links = "".join(f"<< /A << /S /URI /URI ({u}) >> >>\n" for u in uris)
    return f"%PDF-1.4\n{objects}{links}%%EOF\n".encode()


def test_a_one_page_pdf_that_is_one_link_elsewhere() -> None:
    found = run(
        HARVEST, tx(*attachment("inv.pdf", "application/pdf", pdf(["https://x.example/o"])))
    )
    assert found == {"HARVEST_PDF_ONE_LINK": "file='inv.pdf' link_host=x.example"}
    own = pdf(["https://www.b.example/terms"])
    assert run(HARVEST, tx(*attachment("inv.pdf", "application/pdf", own))) == {}
    longer = pdf(["https://x.example/o"], pages=3)
    assert run(HARVEST, tx(*attachment("inv.pdf", "application/pdf", longer))) == {}


def test_the_qr_lure_shape_and_a_plain_photo() -> None:
    def message(text: str) -> tuple[str, str]:
        body = (
            f"--b\nContent-Type: text/plain\n\n{text}\n"
            "--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
            "iVBORw0KGgo=\n--b--\n"
        )
        return 'From: a@b.example\nContent-Type: multipart/related; boundary="b"', body

    found = run(HARVEST, tx(*message("Scan the QR code below to keep your access.")))
    assert set(found) == {"HARVEST_QR_LURE"}
    assert run(HARVEST, tx(*message("Photo of the whiteboard from today."))) == {}


SENDER = SenderCheck(SHIPPED_RULES_DIR)


def test_reply_to_free_mail_elsewhere_and_lists_exempt() -> None:
    headers = "From: CEO <ceo@company.example>\nReply-To: ceo.office@gmail.com\nSubject: hi"
    assert run(SENDER, tx(headers)) == {
        "SENDER_REPLY_TO_FREEMAIL": "from=ceo@company.example reply_to=ceo.office@gmail.com"
    }
    assert run(SENDER, tx(headers + "\nList-Id: <club.googlegroups.com>")) == {}
    assert run(SENDER, tx("From: Tom <tom@gmail.com>\nReply-To: tom@gmail.com")) == {}


def test_free_mail_with_a_company_name() -> None:
    found = run(SENDER, tx('From: "Geek Squad Billing" <gs.renewals@gmail.com>\nSubject: x'))
    assert set(found) == {"SENDER_FREEMAIL_COMPANY_NAME"}
    assert run(SENDER, tx('From: "Tom Baker" <tom.baker@gmail.com>\nSubject: x')) == {}
