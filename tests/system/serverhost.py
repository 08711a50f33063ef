"""Courier and Cyrus mail hosts: mailhost.py's Postfix and users, another POP/IMAP server.

Why a module of its own: mailhost.py's host is Dovecot's; Courier and Cyrus
conflict with Dovecot (and with each other) as Debian packages, so each runs in
a root file system of its own (container.TARGETS `bookworm+courier`...), set up
here as Debian's packages leave it plus only what a test client needs:

* Courier (courier-pop, courier-imap): PAM users with a Maildir each, the
  certificates the packages made at installation (pop3d.pem, imapd.pem) for
  STLS/STARTTLS on 110/143 and implicit TLS on 995/993, each daemon its own
  unit (courier-pop, courier-pop-ssl, courier-imap, courier-imap-ssl);
* Cyrus (cyrus-imapd, cyrus-pop3d): one unit, cyrus-imapd.service, whose
  master runs imapd and pop3d (and imaps, pop3s); passwords through saslauthd
  and PAM, plaintext logins allowed, INBOX created at the first login, and
  reverse-DNS names from /etc/hosts, among them the hostile ones the fixtures need.

pam_unix's failure delay is off for both, so failed-login tests stay fast.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from container import COURIER, CYRUS, Container
from mailhost import (
    PAM_DOVECOT,
    USERS,
    add_addresses,
    add_users,
    configure_postfix,
    make_certificate,
    store_unit,
    wait_for_listeners,
)

PAM_NODELAY = PAM_DOVECOT.replace("tests/system/mailhost.py", "tests/system/serverhost.py")

COURIER_UNITS = (
    "courier-pop.service",
    "courier-pop-ssl.service",
    "courier-imap.service",
    "courier-imap-ssl.service",
)
CYRUS_UNITS = ("cyrus-imapd.service",)
UNITS = {COURIER.name: COURIER_UNITS, CYRUS.name: CYRUS_UNITS}
"""The units each server's lines come from, as Debian's packages name them."""

TLS_PORTS = (993, 995)

# --------------------------------------------------------------------------
# Courier
# --------------------------------------------------------------------------

COURIER_USERDB = "/etc/courier/userdb"
COURIER_AUTHDAEMONRC = "/etc/courier/authdaemonrc"


def configure_courier(ct: Container) -> None:
    """A Maildir per user, PAM without delay, every daemon started."""
    for user in USERS:
        if ct.run(["test", "-d", f"/home/{user}/Maildir"], check=False).returncode != 0:
            ct.run(["runuser", "-u", user, "--", "maildirmake", f"/home/{user}/Maildir"])
    for service in ("pop3", "imap"):
        ct.write_file(f"/etc/pam.d/{service}", PAM_NODELAY)
    ct.systemctl("restart", "courier-authdaemon.service")
    ct.systemctl("enable", *COURIER_UNITS)
    ct.systemctl("restart", *COURIER_UNITS)


@contextlib.contextmanager
def courier_any_user_name(ct: Container, names: list[str], password: str) -> Iterator[None]:
    """Courier accepting `names` (any characters) as users with `password`, from a userdb.

    PAM (Debian's authmodulelist) knows only system users, whose names useradd
    keeps tame; Courier's own userdb, tried first here, takes a name as it is,
    which is what a site with virtual users has.
    """
    hashed = ct.run(["openssl", "passwd", "-6", password]).stdout.strip()
    lines = [
        f"{name}\tuid=1000|gid=1000|home=/home/alice|mail=/home/alice/Maildir|systempw={hashed}"
        for name in names
    ]
    original = ct.read_file(COURIER_AUTHDAEMONRC)
    ct.write_file(COURIER_USERDB, "\n".join(lines) + "\n", mode=0o600)
    ct.run(["makeuserdb"])
    ct.write_file(
        COURIER_AUTHDAEMONRC,
        original.replace('authmodulelist="authpam"', 'authmodulelist="authuserdb authpam"'),
    )
    ct.systemctl("restart", "courier-authdaemon.service")
    try:
        yield
    finally:
        ct.write_file(COURIER_AUTHDAEMONRC, original)
        ct.run(["rm", "-f", COURIER_USERDB, f"{COURIER_USERDB}.dat"])
        ct.systemctl("restart", "courier-authdaemon.service")


# --------------------------------------------------------------------------
# Cyrus
# --------------------------------------------------------------------------

CYRUS_IMAPD_CONF = "/etc/imapd.conf"
CYRUS_CONF = "/etc/cyrus.conf"
CYRUS_LIBRARIES = "/usr/lib/x86_64-linux-gnu/libcyrus*.so.0"
"""Where Cyrus's option names are: `allowstarttls` is there from 3.10 on (its NEWS:
"STARTTLS is now disabled by default"); 3.6 does not know it, and offers STARTTLS
whenever it has a certificate."""
CYRUS_CERT = "/etc/cyrus-pbs-test.pem"
CYRUS_KEY = "/etc/cyrus-pbs-test.key"
CYRUS_SETTINGS = {
    "sasl_pwcheck_method": "saslauthd",
    "sasl_mech_list": "PLAIN LOGIN",
    "allowplaintext": "yes",
    "autocreate_quota": "0",
    # Debian's 1 makes pop3d refuse a second login within a minute, after it has
    # logged "User logged in" (captured on bookworm); the tests log in more often.
    "popminpoll": "0",
    "tls_server_cert": CYRUS_CERT,
    "tls_server_key": CYRUS_KEY,
}
# Debian's cyrus.conf, less the services of packages not installed (nntpd, httpd),
# with imaps and pop3s, which it leaves commented out.
CYRUS_MASTER_CONF = """\
# Written by tests/system/serverhost.py.
START {
  recover cmd="/usr/sbin/cyrus ctl_cyrusdb -r"
}
SERVICES {
  imap cmd="imapd -U 30" listen="imap" prefork=0 maxchild=100
  imaps cmd="imapd -s -U 30" listen="imaps" prefork=0 maxchild=100
  pop3 cmd="pop3d -U 30" listen="pop3" prefork=0 maxchild=50
  pop3s cmd="pop3d -s -U 30" listen="pop3s" prefork=0 maxchild=50
  lmtpunix cmd="lmtpd" listen="/run/cyrus/socket/lmtp" prefork=0 maxchild=20
}
EVENTS {
  checkpoint cmd="/usr/sbin/cyrus ctl_cyrusdb -c" period=30
}
"""
HOSTILE_NAMES = {
    # client address: the reverse-DNS name /etc/hosts gives it, chosen by "the client"
    "192.0.2.40": "evil[192.0.2.50]",
    "192.0.2.41": "[192.0.2.50]",
    "192.0.2.42": "x]-[192.0.2.50]",
    "2001:db8::30": "v6.[2001:db8::50].example",
}


def configure_cyrus(ct: Container) -> None:
    """saslauthd over PAM, plaintext and TLS logins, autocreated INBOXes, names in /etc/hosts."""
    ct.run(["install", "-d", "-m", "0755", "/etc/default"])
    ct.write_file(
        "/etc/default/saslauthd",
        'START=yes\nMECHANISMS="pam"\nMECH_OPTIONS=""\nTHREADS=5\n'
        'OPTIONS="-c -m /var/run/saslauthd"\n',
    )
    for service in ("imap", "pop"):
        ct.write_file(f"/etc/pam.d/{service}", PAM_NODELAY)
    ct.run(["adduser", "--quiet", "cyrus", "sasl"])
    make_certificate(ct, CYRUS_CERT, CYRUS_KEY, owner="cyrus:mail")
    conf = [
        line
        for line in ct.read_file(CYRUS_IMAPD_CONF).splitlines()
        if line.split(":", 1)[0].strip() not in CYRUS_SETTINGS
    ]
    conf += [f"{key}: {value}" for key, value in CYRUS_SETTINGS.items()]
    if (
        ct.run(["sh", "-c", f"grep -qa allowstarttls {CYRUS_LIBRARIES}"], check=False).returncode
        == 0
    ):
        conf.append("allowstarttls: yes")  # 3.10 (Debian 13) offers STARTTLS only when told
    ct.write_file(CYRUS_IMAPD_CONF, "\n".join(conf) + "\n")
    ct.write_file(CYRUS_CONF, CYRUS_MASTER_CONF)
    hosts = ct.read_file("/etc/hosts")
    extra = [f"{address}\t{name}" for address, name in HOSTILE_NAMES.items()]
    ct.write_file("/etc/hosts", hosts.rstrip("\n") + "\n" + "\n".join(extra) + "\n")
    ct.systemctl("enable", "saslauthd.service", *CYRUS_UNITS)
    ct.systemctl("restart", "saslauthd.service", *CYRUS_UNITS)


# --------------------------------------------------------------------------
# The host
# --------------------------------------------------------------------------


def configure_server_host(ct: Container) -> None:
    """mailhost.configure_mail_host with the target's own POP/IMAP server instead of Dovecot."""
    add_addresses(ct)
    add_users(ct)
    configure_postfix(ct)
    if ct.target.server is COURIER:
        configure_courier(ct)
    elif ct.target.server is CYRUS:
        configure_cyrus(ct)
    else:
        raise ValueError(f"{ct.target.name}: not a Courier or Cyrus target")
    ct.run(["systemctl", "enable", "--now", store_unit(ct)])
    wait_for_listeners(ct, (25, 110, 143, *TLS_PORTS))
    time.sleep(0.2)  # the TLS daemons' listeners are up before their first accept
