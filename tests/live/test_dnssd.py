"""DNS-SD advertising of the OSC port (engine.live.dnssd): optional zeroconf, so the
missing-package path is tested everywhere and the real registration where zeroconf is
installed (then a second zeroconf instance must resolve the service)."""

from __future__ import annotations

import logging
import sys

import pytest

from engine.live import dnssd


@pytest.fixture(autouse=True)
def fresh_log_state(monkeypatch):
    monkeypatch.setattr(dnssd, "_said", set())


def test_without_zeroconf_it_returns_none_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # import zeroconf -> ImportError
    with caplog.at_level(logging.WARNING, logger="engine.live.dnssd"):
        assert dnssd.advertise(9000, "Encore") is None
        assert dnssd.advertise(9000, "Encore") is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "pip install zeroconf" in said[0]


@pytest.mark.parametrize("port, name", [(0, "Encore"), (70000, "Encore"), (9000, ""),
                                        (9000, "a.b"), (9000, "x" * 64)])
def test_bad_port_or_name_is_refused_with_the_fix(port, name):
    with pytest.raises(ValueError, match="e.g."):
        dnssd.advertise(port, name)


def test_lan_addresses_leave_out_loopback_when_bound_to_all():
    found = ["127.0.0.1", "192.168.1.20", "10.0.0.5"]
    assert dnssd._lan_addresses("0.0.0.0", found) == ["192.168.1.20", "10.0.0.5"]
    assert dnssd._lan_addresses("", found) == ["192.168.1.20", "10.0.0.5"]
    assert dnssd._lan_addresses("10.0.0.5", found) == ["10.0.0.5"]


def test_a_loopback_server_is_not_advertised(caplog):
    pytest.importorskip("zeroconf")
    with caplog.at_level(logging.WARNING, logger="engine.live.dnssd"):
        assert dnssd.advertise(9000, "Encore", host="127.0.0.1") is None
    assert "0.0.0.0" in caplog.text


def test_advertised_service_resolves_and_closes():
    zeroconf = pytest.importorskip("zeroconf")
    handle = dnssd.advertise(9123, "EncoreTest", properties={"set": "test"})
    if handle is None:
        pytest.skip("this machine has no LAN address or no multicast DNS")
    try:
        browser = zeroconf.Zeroconf(ip_version=zeroconf.IPVersion.V4Only)
        try:
            info = browser.get_service_info(dnssd.SERVICE_TYPE, handle.name, timeout=3000)
        finally:
            browser.close()
        assert info is not None and info.port == 9123
        assert set(info.parsed_addresses()) == set(handle.addresses)
        assert info.properties[b"app"] == b"encore" and info.properties[b"set"] == b"test"
    finally:
        handle.close()
    handle.close()  # idempotent
    assert "closed" in repr(handle)
