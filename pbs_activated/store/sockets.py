"""Reaching a server over the network, every wait bounded by a deadline: TCP, TLS, DNS.

A deadline is a `time.monotonic()` value. The plain socket under each attempt
is resp.open_socket's, whose waits are bounded in the kernel; a TLS socket
keeps Python's timeout. `open_tcp` returns the socket and the timeout it was
armed with, for resp.Connection to keep. Imported only for a TCP server: the
package's own store is a unix socket (resp.open_unix), and the handler saves
this module's import on every start.
"""

from __future__ import annotations

import _socket  # the C half of `socket`: the Python half imports enum and selectors (~5 ms)

from pbs_activated.store import StoreUnavailable
from pbs_activated.store.resp import open_socket, remaining

TYPE_CHECKING = False  # typing itself costs the handler milliseconds
if TYPE_CHECKING:
    import socket
    import ssl

    from pbs_activated.config import RedisSettings


def open_tcp(
    host: str, port: int, deadline: float, settings: RedisSettings
) -> tuple[_socket.socket | socket.socket, float]:
    """Connect to the first address of `host` that answers, in TLS for rediss://."""
    failure: BaseException = StoreUnavailable(f"no address for {host}")
    for family, _, _, _, address in resolve(host, port, deadline):
        try:
            sock, armed = open_socket(family, address, deadline, settings.tls)
        except OSError as error:
            failure = error
            continue
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        if settings.tls:
            return _secure(sock, host, deadline, settings)
        return sock, armed
    raise failure


def resolve(host: str, port: int, deadline: float) -> list[tuple]:  # type: ignore[type-arg]
    """getaddrinfo, bounded by the deadline.

    An address (what Sentinel hands out, what most sites write) needs no name
    service and is returned at once. A name is resolved in a thread the caller
    stops waiting for at the deadline: getaddrinfo itself has no timeout, and
    a resolver that drops packets would hold the handler for its own 5 s x 2.
    A host given as str makes getaddrinfo load the idna codec (6-8 ms per
    handler start); an ASCII name needs no IDNA, so it goes as bytes.
    """
    name = host.encode("ascii") if host.isascii() else host
    try:
        return _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM, 0, _socket.AI_NUMERICHOST)
    except _socket.gaierror:
        pass
    import threading  # only for a host name: the common configurations never pay for it

    found: list[object] = []

    def lookup() -> None:
        try:
            found.append(_socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM))
        except OSError as error:
            found.append(error)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(remaining(deadline))
    if not found:
        raise TimeoutError(f"resolving {host} timed out")
    if isinstance(found[0], OSError):
        raise found[0]
    return found[0]  # type: ignore[return-value]


def _secure(
    sock: _socket.socket, host: str, deadline: float, settings: RedisSettings
) -> tuple[socket.socket, float]:
    """Wrap a connected socket in TLS, the handshake within the deadline."""
    import socket  # only for rediss://: socket and ssl cost the handler ~15 ms of imports

    plain = socket.socket(fileno=sock.detach())
    try:
        armed = remaining(deadline)
        plain.settimeout(armed)
        return tls_context(settings).wrap_socket(plain, server_hostname=host), armed
    except BaseException:
        plain.close()
        raise


_TLS_CONTEXTS: dict[tuple[str, str, str], ssl.SSLContext] = {}


def tls_context(settings: RedisSettings) -> ssl.SSLContext:
    """The TLS context for rediss://: our CA (or the system's), our certificate if any.

    Hostnames are checked: the server's certificate must name the host we
    connected to, an IP address included when Sentinel hands out addresses.
    redis-py gets the same checks from `tls_options`. Made once per process.
    """
    files = (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    if files not in _TLS_CONTEXTS:
        import ssl

        context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
        if settings.tls_cert_file:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file or None)
        _TLS_CONTEXTS[files] = context
    return _TLS_CONTEXTS[files]


def tls_options(settings: RedisSettings) -> dict[str, object]:
    """redis-py's options for rediss://: the checks `tls_context` makes, in its words."""
    if not settings.tls:
        return {}
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": settings.tls_ca_file or None,
        "ssl_certfile": settings.tls_cert_file or None,
        "ssl_keyfile": settings.tls_key_file or None,
    }
