"""Advertise the engine's OSC port on the local network by DNS-SD (Bonjour / mDNS).

    from engine.live.dnssd import advertise
    handle = advertise(9000, "Encore")   # "Encore._osc._udp.local." on every LAN address
    ...
    if handle is not None:
        handle.close()                   # withdraw it (also a context manager)

Tablet apps that browse for ``_osc._udp`` services (TouchOSC's connection browser, for
one) then list the engine by name, so nobody has to type an IP address on stage. This
needs the optional ``zeroconf`` package (``pip install zeroconf``; pure Python, LGPL). Without
it, or when the network refuses multicast, :func:`advertise` returns ``None`` and logs why
once: advertising is a convenience, and the show plays on without it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import Any

__all__ = ["SERVICE_TYPE", "Advertisement", "advertise"]

SERVICE_TYPE = "_osc._udp.local."
log = logging.getLogger(__name__)
_said: set[str] = set()  # reasons already logged, so a restart loop does not spam the log


def _say_once(reason: str, message: str) -> None:
    if reason not in _said:
        _said.add(reason)
        log.warning(message)


class Advertisement:
    """A registered ``_osc._udp`` service; :meth:`close` withdraws it (idempotent)."""

    def __init__(self, zeroconf: Any, info: Any) -> None:
        self._zeroconf = zeroconf
        self._info = info

    @property
    def name(self) -> str:
        """The full service name as registered (zeroconf may have added " (2)" to it if
        another engine already uses the name)."""
        return str(self._info.name)

    @property
    def port(self) -> int:
        return int(self._info.port)

    @property
    def addresses(self) -> list[str]:
        return list(self._info.parsed_addresses())

    def close(self) -> None:
        if self._zeroconf is None:
            return
        zc, self._zeroconf = self._zeroconf, None
        try:
            zc.unregister_service(self._info)
        finally:
            zc.close()

    def __enter__(self) -> Advertisement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._zeroconf is None else ", ".join(self.addresses)
        return f"Advertisement({self.name!r}, port {self.port}, {state})"


def _lan_addresses(host: str, all_addresses: Sequence[str]) -> list[str]:
    """The IPv4 addresses to advertise for a server bound to ``host``: itself, or every
    non-loopback address of the machine when it is bound to all of them."""
    if host in ("", "0.0.0.0"):
        return [a for a in all_addresses if not ipaddress.ip_address(a).is_loopback]
    return [host]


def _machine_ipv4() -> list[str]:
    """Every IPv4 address of this machine's interfaces (ifaddr comes with zeroconf)."""
    import ifaddr

    return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4]


def advertise(port: int, name: str = "Encore", host: str = "0.0.0.0",
              properties: dict[str, str] | None = None) -> Advertisement | None:
    """Register ``name._osc._udp.local.`` for the OSC server on ``host:port``.

    ``host`` is the address the server is bound to (the patch's ``[osc] host``): a
    loopback address is not advertised (tablets could not reach it; set ``host =
    "0.0.0.0"``), ``0.0.0.0`` advertises every LAN address. Returns the
    :class:`Advertisement` to close at the end of the show, or ``None`` (logged once per
    reason) when zeroconf is not installed, the server is loopback-only, the machine has no
    LAN address, or the network refuses multicast.
    """
    if not 0 < port < 65536:
        raise ValueError(f"OSC port {port} is not a UDP port; use 1..65535 (e.g. 9000)")
    if not name or "." in name or len(name.encode()) > 63:
        raise ValueError(f"service name {name!r} must be 1 to 63 bytes without dots, "
                         "e.g. \"Encore\"")
    try:
        import zeroconf
    except ImportError:
        _say_once("missing", "OSC port not advertised on the network: the optional zeroconf "
                  "package is not installed (pip install zeroconf); tablets can still "
                  "connect by IP address")
        return None
    try:
        ip = ipaddress.ip_address(host or "0.0.0.0")
    except ValueError:  # a host name: advertise the address it resolves to
        try:
            ip = ipaddress.ip_address(socket.gethostbyname(host))
        except OSError as err:
            _say_once("resolve", f"OSC port not advertised: cannot resolve {host!r} ({err})")
            return None
    if ip.is_loopback:
        _say_once("loopback", f"OSC port not advertised: the server listens on {host} (this "
                  "computer only); set [osc] host = \"0.0.0.0\" and allow the tablet")
        return None
    addresses = _lan_addresses(str(ip), _machine_ipv4())
    if not addresses:
        _say_once("no-lan", "OSC port not advertised: this computer has no network address "
                  "besides loopback")
        return None
    info = zeroconf.ServiceInfo(
        SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=port, parsed_addresses=addresses,
        properties={"app": "encore", "path": "/encore", **(properties or {})},
        server=f"{socket.gethostname().split('.')[0]}.local.")
    try:
        zc = zeroconf.Zeroconf(ip_version=zeroconf.IPVersion.V4Only)
    except OSError as err:
        _say_once("network", f"OSC port not advertised: multicast DNS is unavailable ({err})")
        return None
    try:
        zc.register_service(info, allow_name_change=True)
    except (OSError, zeroconf.Error) as err:
        zc.close()
        _say_once("register", f"OSC port not advertised: registering {name!r} failed ({err})")
        return None
    log.info("advertised %s on %s port %d", info.name, ", ".join(addresses), port)
    return Advertisement(zc, info)
