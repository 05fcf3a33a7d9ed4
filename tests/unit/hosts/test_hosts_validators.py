"""Strict validation of names, addresses, ports, users and libvirt URIs, with a hostile corpus."""

import pytest
from django.core.exceptions import ValidationError

from hosts.validators import (
    default_libvirt_uri,
    validate_address,
    validate_host_name,
    validate_libvirt_uri,
    validate_port,
    validate_ssh_user,
)

HOSTILE_STRINGS = [
    "",
    " ",
    "a b",
    "host\n",
    "host\x00",
    "host;rm -rf /",
    "$(reboot)",
    "`id`",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "../../etc/passwd",
    "-oProxyCommand=sh",
    "host|nc",
    "x" * 300,
    "ünïcode",
    "host\u202eevil",
    "%0aInjected",
]


@pytest.mark.parametrize("value", ["kvm-01", "a", "Host.example_1", "9lives", "x" * 63])
def test_host_name_accepts(value):
    validate_host_name(value)


@pytest.mark.parametrize("value", HOSTILE_STRINGS + ["-leading", ".leading", "_leading", "x" * 64, None, 5])
def test_host_name_rejects(value):
    with pytest.raises(ValidationError):
        validate_host_name(value)


@pytest.mark.parametrize(
    "value",
    ["10.77.0.11", "192.0.2.1", "2001:db8::1", "::1", "fe80::1", "kvm-01", "kvm01.example.org", "a.b-c.d"],
)
def test_address_accepts(value):
    validate_address(value)


@pytest.mark.parametrize(
    "value",
    HOSTILE_STRINGS
    + [
        "10.0.0.256", "1.2.3", "01.2.3.4", "1.2.3.4.5", "1.2.3.4 ", " 1.2.3.4",
        "[2001:db8::1]", "2001:db8::1%eth0", "2001:db8:::1", "gggg::1",
        "-host.example", "host-.example", "host..example", "host.example.", "a" * 64 + ".com",
        "host_name.example", "10.0.0.1:22", "user@host",
    ],
)
def test_address_rejects(value):
    with pytest.raises(ValidationError):
        validate_address(value)


@pytest.mark.parametrize("value", [1, 22, 2222, 65535])
def test_port_accepts(value):
    validate_port(value)


@pytest.mark.parametrize("value", [0, -1, 65536, 10**9, "22", 22.0, True, None])
def test_port_rejects(value):
    with pytest.raises(ValidationError):
        validate_port(value)


@pytest.mark.parametrize("value", ["root", "admin_1", "virt.ops", "_svc", "A" * 32])
def test_ssh_user_accepts(value):
    validate_ssh_user(value)


@pytest.mark.parametrize("value", HOSTILE_STRINGS + ["1root", "-root", ".root", "A" * 33, "root@host", "ro ot"])
def test_ssh_user_rejects(value):
    with pytest.raises(ValidationError):
        validate_ssh_user(value)


@pytest.mark.parametrize(
    "value",
    [
        "qemu:///system",
        "qemu+ssh://root@10.0.0.1/system",
        "qemu+ssh://root@10.0.0.1:2222/system",
        "qemu+ssh://kvm-01.example.org/system",
        "qemu+libssh://admin@[2001:db8::1]:22/system",
        "qemu+tcp://10.77.0.11/system",
        "qemu+tcp://10.77.0.11:16509/system",
        "qemu+tls://kvm-01.example.org/system",
    ],
)
def test_libvirt_uri_accepts(value):
    validate_libvirt_uri(value)


@pytest.mark.parametrize(
    "value",
    HOSTILE_STRINGS
    + [
        "qemu:///session",
        "qemu://10.0.0.1/system",
        "qemu+unix:///system",
        "qemu+ext://host/system?command=/bin/sh",
        "xen+ssh://root@host/system",
        "lxc:///",
        "test:///default",
        "http://10.0.0.1/system",
        "qemu+ssh://root@10.0.0.1/session",
        "qemu+ssh://root@10.0.0.1/",
        "qemu+ssh://root@10.0.0.1",
        "qemu+ssh://root@10.0.0.1/system?keyfile=/root/.ssh/id_rsa",
        "qemu+ssh://root@10.0.0.1/system?command=sh",
        "qemu+ssh://root@10.0.0.1/system?no_verify=1",
        "qemu+ssh://root@10.0.0.1/system#frag",
        "qemu+ssh://root:secret@10.0.0.1/system",
        "qemu+ssh://root@10.0.0.1:0/system",
        "qemu+ssh://root@10.0.0.1:70000/system",
        "qemu+ssh://root@10.0.0.1:abc/system",
        "qemu+ssh://root@2001:db8::1/system",
        "qemu+ssh://-oProxyCommand=sh@10.0.0.1/system",
        "qemu+ssh://root@-oProxyCommand=sh/system",
        "qemu+ssh://root@10.0.0.256/system",
        "qemu+ssh://root@/system",
        "qemu+tcp://root@10.0.0.1/system",
        "qemu+ssh://root@10.0.0.1/system\n",
        "qemu+ssh://root@10.0.0.1/sys tem",
    ],
)
def test_libvirt_uri_rejects(value):
    with pytest.raises(ValidationError):
        validate_libvirt_uri(value)


def test_default_uri_brackets_ipv6_and_validates():
    assert default_libvirt_uri(address="10.0.0.1", ssh_user="root", ssh_port=22) == "qemu+ssh://root@10.0.0.1:22/system"
    uri = default_libvirt_uri(address="2001:db8::1", ssh_user="root", ssh_port=2222)
    assert uri == "qemu+ssh://root@[2001:db8::1]:2222/system"
    validate_libvirt_uri(uri)
