"""What each rejection is and whose block it is (issue #15), one table of samples.

Every sample is a rejection line written here from public facts (the source
of its wording is named in the table: provider documentation of their codes,
bounces people publish when asking for help, and samples of the corpus),
put into a bounce of the named flavour (tests/forwards.py: Postfix, Exim or
Microsoft 365's NDR) and forwarded in every style of the corpus plus a
terminal client's. Each forward must give the same codes, IPs, kind and
issuer. The banned IP is always 203.0.113.7; the refusing host's own address
and the forwarder's decoy addresses must never be reported.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import mailbot_cli
from forwards import DECOYS, STYLES, ndr, pasted

from mailbot.extraction import KINDS, Extraction, extract
from mailbot.extraction.classify import MAX_CLASSIFIED, classify
from mailbot.extraction.findings import Finding
from mailbot.extraction.issuers import IssuerTable, IssuerTableError, default_table, load_table

IP = "203.0.113.7"
HOST_IP = "104.47.74.10"


@dataclass(frozen=True)
class Sample:
    id: str
    source: str
    """Where the wording of the line comes from."""
    flavour: str
    host: str
    line: str
    kind: str
    issuer: str | None
    reply: str | None
    status: str | None
    ips: tuple[str, ...] | None = (IP,)
    """None: not asserted (IPs that are not the banned IP are another rule's business)."""
    via: str | None = None
    dsn_status: str = "5.0.0"
    rcpt: str = "bob@example.com"


MS_LEARN = "Microsoft Learn, 'Email non-delivery reports and SMTP errors in Exchange Online'"
SAMPLES = [
    # This desk's provider: Microsoft 365 / Exchange Online.
    Sample("ms-511", f"{MS_LEARN}; tests/corpus/found/s01", "postfix", "contoso-com.mail.protection.outlook.com",
           "550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal from this list please "
           "forward this message to delist@messaging.microsoft.com. For more information please go to "
           "http://go.microsoft.com/fwlink/?LinkId=526653. AS(1410) [DM6NAM11FT021.eop-nam11.prod.protection."
           "outlook.com]", "ip_block", "microsoft", "550", "5.7.511"),
    Sample("ms-606", f"{MS_LEARN}; bounces on pastebin (AS(1430))", "exim", "email-com.mail.protection.outlook.com",
           "550 5.7.606 Access denied, banned sending IP [203.0.113.7]. To request removal from this list please "
           "visit https://sender.office.com/ and follow the directions. For more information please go to "
           "http://go.microsoft.com/fwlink/?LinkID=526655 AS(1430)", "ip_block", "microsoft", "550", "5.7.606"),
    Sample("ms-708", f"{MS_LEARN} (5.7.7xx)", "exchange", "example-com.mail.protection.outlook.com",
           "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP. For more "
           "information please go to http://go.microsoft.com/fwlink/?LinkId=526653 AS(7230) "
           "[BN8NAM12FT003.eop-nam12.prod.protection.outlook.com]", "sender_block", "microsoft", "550", "5.7.708",
           ips=()),
    Sample("ms-750", f"{MS_LEARN} (5.7.750)", "postfix", "example-com.mail.protection.outlook.com",
           "550 5.7.750 Service unavailable. Client blocked from sending from unregistered domains. For more "
           "information please go to http://go.microsoft.com/fwlink/?LinkId=526653 AS(2006)", "sender_block",
           "microsoft", "550", "5.7.750", ips=()),
    Sample("ms-650", f"{MS_LEARN} (4.7.650); tests/corpus/maildir/bsd/rhost-microsoft-05", "postfix",
           "outlook-com.olc.protection.outlook.com",
           "451 4.7.650 The mail server [203.0.113.7] has been temporarily rate limited due to IP reputation. For "
           "e-mail delivery information, see https://postmaster.live.com (S3113)", "rate_limit", "microsoft", "451",
           "4.7.650", dsn_status="4.0.0"),
    Sample("ms-recipient", f"{MS_LEARN} (5.1.10)", "exchange", "example-com.mail.protection.outlook.com",
           "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient bob@example.com not found by SMTP address lookup",
           "recipient_unknown", "microsoft", "550", "5.1.10", ips=()),
    Sample("ms-dmarc", f"{MS_LEARN} (5.7.509); tests/corpus/maildir/bsd/rhost-microsoft-04", "postfix",
           "example-com.mail.protection.outlook.com",
           "550 5.7.509 Access denied, sending domain [SENDER.EXAMPLE] does not pass DMARC verification and has a "
           "DMARC policy of reject. [AM0PR01MB0001.eurprd01.prod.outlook.com]", "auth_failure", "microsoft", "550",
           "5.7.509", ips=()),
    # Outlook.com, the consumer service.
    Sample("consumer-3140", "tests/corpus/found/f06 (a published S3140 bounce)", "postfix",
           "eur.olc.protection.outlook.com",
           "550 5.7.1 Unfortunately, messages from [203.0.113.7] weren't sent. Please contact your Internet service "
           "provider since part of their network is on our block list (S3140). You can also refer your provider "
           "to http://mail.live.com/mail/troubleshooting.aspx#errors. [HK2APC01FT029.eop-APC01.prod.protection."
           "outlook.com]", "ip_block", "outlook_consumer", "550", "5.7.1"),
    Sample("consumer-3150", "S3150 bounces published on pastebin and by SendGrid support", "exim",
           "hotmail-com.olc.protection.outlook.com",
           "550 5.7.1 Unfortunately, messages from [203.0.113.7] weren't sent. Please contact your Internet service "
           "provider since part of their network is on our block list (S3150). You can also refer your provider "
           "to http://mail.live.com/mail/troubleshooting.aspx#errors.", "ip_block", "outlook_consumer", "550",
           "5.7.1"),
    Sample("consumer-rp001", "Outlook.com postmaster troubleshooting page (RP-001)", "postfix",
           "hotmail-com.olc.protection.outlook.com",
           "421 RP-001 (BAY004-MC1F21) Unfortunately, some messages from 203.0.113.7 weren't sent. Please try "
           "again. We have limits for how many messages can be sent per hour and per day.", "rate_limit",
           "outlook_consumer", "421", "4.0.0", dsn_status="4.0.0"),
    # Spamhaus, directly and cited by another provider.
    Sample("spamhaus-eop", "tests/corpus/lines.jsonl l02 (sendgrid/docs#6275)", "postfix",
           "example-com.mail.protection.outlook.com",
           "550 5.7.1 Service unavailable, Client host [203.0.113.7] blocked using Spamhaus. To request removal "
           "from this list see https://www.spamhaus.org/query/ip/203.0.113.7 (AS3130). "
           "[VE1EUR01FT062.eop-EUR01.prod.protection.outlook.com]", "ip_block", "spamhaus", "550", "5.7.1",
           via="microsoft"),
    Sample("spamhaus-zen", "Postfix's reject_rbl_client wording, Spamhaus's lookup URL", "postfix", "mx.example.com",
           "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org; "
           "https://www.spamhaus.org/query/ip/203.0.113.7", "ip_block", "spamhaus", "554", "5.7.1"),
    Sample("spamhaus-dbl", "iCloud's DBL rejection as listed on smtp.codes", "postfix", "mx01.mail.icloud.com",
           "550 5.7.1 Your email was rejected due to having a domain present in the Spamhaus DBL -- see "
           "https://www.spamhaus.org/dbl/", "sender_block", "spamhaus", "550", "5.7.1", ips=(), via="apple",
           rcpt="bob@icloud.com"),
    Sample("spamhaus-resolver", "Spamhaus's return codes page (open/public resolver)", "postfix", "mx.example.com",
           "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org; Error: open "
           "resolver; https://www.spamhaus.org/returnc/pub/198.51.100.53", "other", "spamhaus", "554", "5.7.1",
           ips=None),
    # Other block lists and filters.
    Sample("barracuda", "bounces quoted by MIT CSAIL and LuxSci help pages", "exim", "mx.example.com",
           "554 Service unavailable; Client host [203.0.113.7] blocked using Barracuda Reputation; "
           "http://www.barracudanetworks.com/reputation/?r=1&ip=203.0.113.7", "ip_block", "barracuda", "554", None),
    Sample("spamcop", "SpamCop's bl.shtml and Postfix's reject_rbl_client wording", "postfix", "mx.example.com",
           "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using bl.spamcop.net; Blocked - see "
           "https://www.spamcop.net/bl.shtml?203.0.113.7", "ip_block", "spamcop", "554", "5.7.1"),
    Sample("proofpoint", "Proofpoint IP check bounces as senders report them (554 5.7.0 Blocked)", "postfix",
           "mx0a-00123401.pphosted.com", "554 5.7.0 Blocked - see https://ipcheck.proofpoint.com/?ip=203.0.113.7",
           "ip_block", "proofpoint", "554", "5.7.0"),
    Sample("cloudmark", "tests/corpus/maildir/bsd/rhost-franceptt-06 (Orange citing Cloudmark CSI)", "postfix",
           "smtp-in.orange.fr",
           "550 mwinf5c04 ME Adresse IP source bloquee pour incident de spam. Client host blocked for spamming "
           "issues. OFR006_102 Ref http://csi.cloudmark.com/reset-request/?ip=203.0.113.7 [102]", "ip_block",
           "cloudmark", "550", "5.0.0"),
    Sample("mimecast-policy", "Mimecast rejections collected by Word to the Wise", "postfix",
           "us-smtp-inbound-1.mimecast.com",
           "550 Administrative prohibition - envelope blocked - https://community.mimecast.com/docs/DOC-1369#550 "
           "[hDa_Aq1bNGm1AqxKjk6hgQ.us97]", "policy", "mimecast", "550", "5.0.0", ips=()),
    Sample("mimecast-recipient", "Mimecast rejections collected by Word to the Wise", "exim",
           "eu-smtp-inbound-1.mimecast.com",
           "550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550 [p1u7Xz2yO5yH4lwE9-R0Vw.uk93]",
           "recipient_unknown", "mimecast", "550", None, ips=()),
    # Other mailbox providers.
    Sample("gmail-spam", "Gmail's multi-line 5.7.1 as Exim bounces quote it (pastebin)", "exim",
           "gmail-smtp-in.l.google.com",
           "550-5.7.1 [203.0.113.7 12] Our system has detected that this message is 550-5.7.1 likely unsolicited "
           "mail. To reduce the amount of spam sent to Gmail, 550-5.7.1 this message has been blocked. Please "
           "visit 550-5.7.1 https://support.google.com/mail/?p=UnsolicitedMessageError 550 5.7.1 for more "
           "information. dh9si2656259wib.8 - gsmtp", "content", "gmail", "550", "5.7.1"),
    Sample("gmail-unknown", "Google's SMTP error reference (5.1.1)", "postfix", "gmail-smtp-in.l.google.com",
           "550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the "
           "recipient's email address for typos or unnecessary spaces. Learn more at "
           "https://support.google.com/mail/?p=NoSuchUser a1si1234567qkb.1 - gsmtp", "recipient_unknown", "gmail",
           "550", "5.1.1", ips=(), rcpt="bob@gmail.com"),
    Sample("gmail-full", "Google's SMTP error reference (4.2.2)", "exim", "gmail-smtp-in.l.google.com",
           "452-4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to "
           "https://support.google.com/mail/?p=OverQuotaTemp a1si1234567qkb.2 - gsmtp", "mailbox_full", "gmail",
           "452", "4.2.2", ips=()),
    Sample("gmail-auth", "Google's SMTP error reference (5.7.26)", "postfix", "gmail-smtp-in.l.google.com",
           "550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders "
           "to authenticate with either SPF or DKIM. Learn more at https://support.google.com/mail/answer/81126 "
           "a1si1234567qkb.3 - gsmtp", "auth_failure", "gmail", "550", "5.7.26", ips=()),
    Sample("gmail-rate", "Google's SMTP error reference (4.7.28)", "postfix", "gmail-smtp-in.l.google.com",
           "421-4.7.28 [203.0.113.7 15] Our system has detected an unusual rate of unsolicited mail originating "
           "from your IP address. To protect our users from spam, mail sent from your IP address has been "
           "temporarily rate limited. Please visit https://support.google.com/mail/?p=UnsolicitedRateLimitError "
           "a1si1234567qkb.4 - gsmtp", "rate_limit", "gmail", "421", "4.7.28", dsn_status="4.0.0"),
    Sample("yahoo", "Yahoo's SMTP error codes for senders; cPanel's support article (TSS04)", "postfix",
           "mta7.am0.yahoodns.net",
           "421 4.7.0 [TSS04] Messages from 203.0.113.7 temporarily deferred due to unexpected volume or user "
           "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", "rate_limit", "yahoo", "421",
           "4.7.0", dsn_status="4.0.0"),
    Sample("apple-policy", "Apple's postmaster page; smtp.codes iCloud list ([CS01])", "postfix",
           "mx01.mail.icloud.com",
           "550 5.7.1 [CS01] Message rejected due to local policy. Please visit "
           "https://support.apple.com/en-us/HT204137", "policy", "apple", "550", "5.7.1", ips=(),
           rcpt="bob@icloud.com"),
    Sample("apple-full", "smtp.codes iCloud list; tests/corpus/maildir/bsd/rhost-apple-03", "exim",
           "mx02.mail.icloud.com", "552 5.2.2 <bob@icloud.com>: user is over quota", "mailbox_full", "apple", "552",
           "5.2.2", ips=(), rcpt="bob@icloud.com"),
    Sample("gmx", "GMX postmaster error-messages page (block listed IP)", "postfix", "mx00.emig.gmx.net",
           "554-gmx.net (mxgmx104) Nemesis ESMTP Service not available 554-No SMTP service 554-IP address is block "
           "listed. 554 For explanation visit https://postmaster.gmx.net/en/case?c=r0201&i=ip&v=203.0.113.7&r=1MNcgj",
           "ip_block", "gmx", "554", "5.0.0", rcpt="bob@gmx.net"),
    Sample("t-online", "postmaster.t-online.de; Spam Resource (T-Online (BL))", "exim", "mx00.t-online.de",
           "554 IP=203.0.113.7 - A problem occurred. (Ask your postmaster for help or to contact tosa@rx.t-online.de "
           "to clarify.) (BL)", "ip_block", "t-online", "554", None, rcpt="bob@t-online.de"),
    # Whoever: the generic words and codes (Postfix's and Sendmail's default texts, RFC 3463).
    Sample("generic-unknown", "Postfix's local recipient check", "postfix", "mx.example.com",
           "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
           "recipient_unknown", None, "550", "5.1.1", ips=()),
    Sample("generic-full", "Sendmail's mailbox full, as in tests/corpus (lhost-*: 'Mailbox Full')", "exim",
           "mx.example.com", "552 5.2.2 <bob@example.com>... Mailbox Full", "mailbox_full", None, "552", "5.2.2",
           ips=()),
    Sample("generic-content", "content filters' wording (message rejected as spam)", "postfix", "mx.example.com",
           "550 5.7.1 Message rejected as spam by Content Filtering.", "content", None, "550", "5.7.1", ips=()),
    Sample("generic-policy", "Postfix's relay restriction", "postfix", "mx.example.com",
           "554 5.7.1 <bob@example.com>: Relay access denied", "policy", None, "554", "5.7.1", ips=()),
    Sample("generic-sender", "Postfix's sender login maps", "exim", "mx.example.com",
           "553 5.7.1 <alice@sender.example>: Sender address rejected: not owned by user alice",
           "sender_block", None, "553", "5.7.1", ips=()),
    Sample("generic-auth", "Postfix's reject_unknown_client_hostname", "postfix", "mx.example.com",
           "450 4.7.1 Client host rejected: cannot find your reverse hostname, [203.0.113.7]", "auth_failure", None,
           "450", "4.7.1", dsn_status="4.0.0"),
    Sample("generic-rate", "Postfix's anvil connection limit", "postfix", "mx.example.com",
           "421 4.7.0 mx.example.com Error: too many connections from 203.0.113.7", "rate_limit", None, "421",
           "4.7.0", dsn_status="4.0.0"),
    Sample("generic-block", "Postfix's reject_rbl_client with a private list", "postfix", "mx.example.com",
           "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using dnsbl.example.net", "ip_block",
           None, "554", "5.7.1"),
    Sample("generic-other", "RFC 3463 X.4.6 (routing loop)", "postfix", "mx.example.com",
           "554 5.4.6 Hop count exceeded - possible mail loop", "other", None, "554", "5.4.6", ips=()),
]


def test_the_table_has_a_sample_for_every_issuer_and_every_kind() -> None:
    assert {s.issuer for s in SAMPLES} >= {i.name for i in default_table().issuers}
    assert {s.kind for s in SAMPLES} == set(KINDS)


def _check(ex: Extraction, s: Sample, style: str) -> None:
    where = f"{s.id} [{style}]"
    assert ex.unreadable is None, where
    assert (ex.reply_code, ex.status) == (s.reply, s.status), (where, ex.reply_code, ex.status, ex.text)
    everything = {ip for f in ex.findings for ip in f.ips}
    assert not everything & {*DECOYS, HOST_IP, "198.51.100.77"}, (where, everything)
    if s.ips is not None:
        assert ex.ips == s.ips, (where, ex.ips)
    c = ex.classification
    assert c is not None, where
    assert (c.kind, c.issuer, c.via) == (s.kind, s.issuer, s.via), (where, c, ex.text)
    assert c.issuer_is_ours == (s.issuer == "microsoft"), where
    assert c.kind_evidence, where  # what decided it is shown
    assert bool(c.issuer_evidence) == (s.issuer is not None), where
    assert ex.inferred is None, where  # a code was read: nothing is inferred


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_every_forward_style_reads_the_same_kind_and_issuer(sample: Sample) -> None:
    bounce = ndr(sample.flavour, sample.rcpt, sample.host, HOST_IP, sample.line, sample.dsn_status)
    for style, forward in STYLES.items():
        _check(extract(forward(bounce)), sample, style)


def test_evidence_names_the_codes_and_words_that_decided() -> None:
    bounce = ndr("postfix", "bob@example.com", "example-com.mail.protection.outlook.com", HOST_IP, SAMPLES[0].line)
    c = extract(bounce).classification
    assert c is not None
    assert c.kind_evidence == ("code 5.7.511 (microsoft)",)
    assert {"code 5.7.511", '"AS(1410)"', "host example-com.mail.protection.outlook.com"} <= set(c.issuer_evidence)
    assert (c.issuer_label, c.issuer_category) == ("Microsoft 365 / Exchange Online", "provider")
    spamhaus = next(s for s in SAMPLES if s.id == "spamhaus-zen")
    c = extract(ndr("postfix", "bob@example.com", spamhaus.host, HOST_IP, spamhaus.line)).classification
    assert c is not None
    assert c.kind_evidence == ("named spamhaus",)
    assert c.issuer_evidence[0] == '"zen.spamhaus.org"'
    assert c.removal == "https://check.spamhaus.org/"


def test_a_recipient_domain_is_not_evidence_of_whose_block_it_is() -> None:
    # The sender's own relay refuses to relay to a Gmail address: not Google's rejection.
    line = "554 5.7.1 <bob@gmail.com>: Relay access denied"
    ex = extract(ndr("postfix", "bob@gmail.com", "smtp.sender.example", "198.51.100.25", line))
    assert (ex.kind, ex.issuer) == ("policy", None)


def test_the_refusing_host_alone_names_the_provider() -> None:
    line = "550 5.1.1 <bob@yahoo.com>: user unknown"
    ex = extract(ndr("exim", "bob@yahoo.com", "mta6.am0.yahoodns.net", "67.195.204.72", line))
    assert (ex.kind, ex.issuer) == ("recipient_unknown", "yahoo")
    assert ex.classification is not None and ex.classification.issuer_evidence == ("host mta6.am0.yahoodns.net",)


def test_json_output_has_kind_issuer_and_inferred(tmp_path: Path) -> None:
    spamhaus = next(s for s in SAMPLES if s.id == "spamhaus-eop")
    coded = tmp_path / "spamhaus.eml"
    coded.write_bytes(STYLES["outlook_inline"](ndr("postfix", "bob@example.com", spamhaus.host, HOST_IP,
                                                   spamhaus.line)))
    fragment = tmp_path / "fragment.eml"
    fragment.write_bytes(pasted("Hi, we get this: Access denied, banned sending IP [203.0.113.7]\n"))
    r = mailbot_cli("parse", "--json", str(coded), str(fragment))
    assert r.returncode == 0, r.stderr
    first, second = (json.loads(line) for line in r.stdout.splitlines())
    assert (first["kind"], first["issuer"], first["issuer_is_ours"], first["issuer_via"]) == (
        "ip_block", "spamhaus", False, "microsoft")
    assert first["issuer_removal"] == "https://check.spamhaus.org/" and first["inferred"] is None
    assert first["evidence"]["issuer"] and first["findings"][0]["classification"]["issuer"] == "spamhaus"
    assert (second["reply_code"], second["status"], second["ips"]) == (None, None, [IP])
    assert second["inferred"] == {"family": "5.7.606-5.7.649", "evidence": "banned sending IP", "issuer": "microsoft"}
    assert (second["kind"], second["issuer"], second["issuer_is_ours"]) == ("ip_block", "microsoft", True)
    human = mailbot_cli("parse", str(coded), str(fragment))
    assert "kind=ip_block issuer=spamhaus (via microsoft)" in human.stdout
    assert "inferred 5.7.606-5.7.649" in human.stdout


# The issuer table as data ---------------------------------------------------------


def test_the_shipped_table_is_what_extract_uses_by_default() -> None:
    table = default_table()
    assert table.ours == "microsoft"
    assert [i.name for i in table.issuers][:2] == ["outlook_consumer", "microsoft"]
    assert all(i.removal for i in table.issuers)


def test_an_operator_adds_an_issuer_and_patterns_and_names_another_desk_as_ours() -> None:
    line = "550 5.7.1 Message refused, listed by ExampleRBL: see https://rbl.example.net/lookup?ip=203.0.113.7"
    raw = ndr("postfix", "bob@example.com", "mx.example.com", HOST_IP, line)
    assert extract(raw).issuer is None
    table = default_table().extended({
        "issuer": [
            {"name": "examplerbl", "label": "Example RBL", "category": "blocklist", "marks": ["ExampleRBL"],
             "removal": "https://rbl.example.net/removal", "default_kind": "ip_block"},
            {"name": "gmail", "hosts": ["mx.example.com"]},  # lists are added to
        ],
    })
    ex = extract(raw, issuers=table)
    assert (ex.kind, ex.issuer, ex.classification and ex.classification.via) == ("ip_block", "examplerbl", "gmail")
    assert "google.com" in (table.get("gmail") or default_table().issuers[0]).hosts
    ours = table.extended({"ours": "gmail"})
    gmail = next(s for s in SAMPLES if s.id == "gmail-unknown")
    ex = extract(ndr("postfix", gmail.rcpt, gmail.host, HOST_IP, gmail.line), issuers=ours)
    assert (ex.issuer, ex.issuer_is_ours) == ("gmail", True)
    assert extract(ndr("postfix", gmail.rcpt, gmail.host, HOST_IP, gmail.line)).issuer_is_ours is False


def test_an_entry_can_replace_a_shipped_one_whole() -> None:
    table = default_table().extended({"issuer": [{"name": "spamhaus", "replace": True, "category": "blocklist",
                                                  "marks": ["zen.spamhaus.org"]}]})
    spamhaus = table.get("spamhaus")
    assert spamhaus is not None and spamhaus.marks == ("zen.spamhaus.org",) and spamhaus.tags == ()


@pytest.mark.parametrize(("data", "names"), [
    ({"issuer": [{"name": "Bad Name"}]}, "issuer[0] ('Bad Name'): name"),
    ({"issuer": [{"name": "x", "categroy": "provider"}]}, "unknown key 'categroy'"),
    ({"issuer": [{"name": "x", "codes": ["5.7"]}]}, "issuer[0] ('x').codes: '5.7'"),
    ({"issuer": [{"name": "x", "kinds": {"5.7.1": "blocked"}}]}, "issuer[0] ('x').kinds.'5.7.1': kind"),
    ({"issuer": [{"name": "x", "marks": ["#"]}]}, "issuer[0] ('x').marks: '#'"),
    ({"issuer": [{"name": "x", "marks": ["###abc"]}]}, "must hold 2 to 200"),
    ({"issuer": [{"name": "x", "fragment": [{"phrase": "banned", "kind": "nope"}]}]}, "fragment[0].kind"),
    ({"ours": "nobody", "issuer": [{"name": "x"}]}, "ours = 'nobody' names no issuer"),
    ({"issuer": [{"name": "x"}, {"name": "x"}]}, "issuer 'x': named twice"),
])
def test_a_wrong_entry_is_refused_with_its_name_and_key(data: dict[str, object], names: str) -> None:
    with pytest.raises(IssuerTableError, match=None) as err:
        load_table(data)
    assert names in str(err.value)


def test_the_table_travels_to_the_extraction_worker() -> None:
    import pickle

    table = default_table().extended({"issuer": [{"name": "examplerbl", "marks": ["ExampleRBL"]}]})
    again: IssuerTable = pickle.loads(pickle.dumps(table))
    assert again == table and again.fragment_regex is not None


# Hostile input ----------------------------------------------------------------------


def test_classifying_a_huge_rejection_line_stays_bounded() -> None:
    table = default_table()
    for junk in ("AS(1" * 400_000, "spamhaus " * 150_000, "banned sending " * 100_000, "S31" * 400_000,
                 "mx." * 400_000 + "google.com", "a@" * 400_000 + "gmail.com", "550-5.7.1 " * 150_000):
        start = time.perf_counter()
        f = classify(Finding(reply_code="550", status=None, text="550 " + junk), table)
        assert time.perf_counter() - start < 0.5, junk[:20]
        assert f.classification is not None


def test_an_operators_pattern_cannot_make_matching_backtrack() -> None:
    table = default_table().extended({"issuer": [{"name": "x", "marks": ["a a a a a a a a a a a a b"],
                                                  "tags": ["a#a#a#a#a#a#b"]}]})
    text = "550 5.7.1 " + "a " * 300_000 + "a1" * 300_000
    start = time.perf_counter()
    classify(Finding(reply_code="550", status="5.7.1", text=text), table)
    assert time.perf_counter() - start < 0.5


def test_thousands_of_findings_classify_only_the_first_few() -> None:
    lines = "".join(f"550 5.7.1 <u{i}@example.com> blocked using zen.spamhaus.org\n\n" for i in range(5000))
    start = time.perf_counter()
    ex = extract(pasted(lines))
    assert time.perf_counter() - start < 3.0
    assert len(ex.findings) > MAX_CLASSIFIED
    assert all(f.classification for f in ex.findings[:MAX_CLASSIFIED])
    assert ex.findings[-1].classification is None and ex.issuer == "spamhaus"
