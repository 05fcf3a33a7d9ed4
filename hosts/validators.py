"""Strict validation of what admins type and what hosts report (pure functions).

Each validate_* raises django.core.exceptions.ValidationError with a message that says what
is accepted.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
SSH_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")
HOST_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,31}\Z")
MAX_HOST_TAGS = 20
_DNS_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")

LIBVIRT_REMOTE_SCHEMES = ("qemu+ssh", "qemu+libssh", "qemu+tcp", "qemu+tls")
LIBVIRT_LOCAL_URI = "qemu:///system"
LIBVIRT_SSH_SCHEMES = ("qemu+ssh://", "qemu+libssh://")


def validate_host_name(value: str) -> None:
    if not isinstance(value, str) or not HOST_NAME_RE.match(value):
        raise ValidationError(
            "Use 1–63 characters: letters, digits, '.', '_' or '-', starting with a letter or digit.",
            code="invalid_host_name",
        )


def _is_dns_name(value: str) -> bool:
    if len(value) > 253:
        return False
    labels = value.split(".")
    if not all(_DNS_LABEL_RE.match(label) for label in labels):
        return False
    # "10.0.0.300" or "1.2.3" are mistyped IP addresses, not names.
    return not labels[-1].isdigit()


def validate_address(value: str) -> None:
    """Accept a DNS host name, an IPv4 address or an IPv6 address (no brackets, no zone)."""
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValidationError("Enter a host name, IPv4 or IPv6 address.", code="invalid_address")
    if ":" in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not a valid IPv6 address.", code="invalid_address") from None
        if "%" in value:
            raise ValidationError("IPv6 zone ids (%iface) are not supported.", code="invalid_address")
        return
    if re.fullmatch(r"[0-9.]+", value):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not a valid IPv4 address.", code="invalid_address") from None
        return
    if not _is_dns_name(value):
        raise ValidationError(
            f"{value!r} is not a valid host name (letters, digits and '-' in dot-separated labels).",
            code="invalid_address",
        )


def validate_port(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValidationError("A port is a number from 1 to 65535.", code="invalid_port")


def validate_ssh_user(value: str) -> None:
    if not isinstance(value, str) or not SSH_USER_RE.match(value):
        raise ValidationError(
            "Use up to 32 characters: letters, digits, '_', '.' or '-', not starting with a digit, '.' or '-'.",
            code="invalid_ssh_user",
        )


def validate_libvirt_uri(value: str) -> None:
    """Accept qemu:///system or qemu+{ssh,libssh,tcp,tls}://[user@]address[:port]/system.

    No query string (parameters such as keyfile= or command= are set by the portal, never by
    users), no fragment, no password in the URI.
    """
    if not isinstance(value, str) or not value or any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValidationError("Enter a libvirt URI without spaces.", code="invalid_uri")
    if value == LIBVIRT_LOCAL_URI:
        return
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValidationError(f"{value!r} is not a valid URI.", code="invalid_uri") from None
    allowed = ", ".join(f"{scheme}://" for scheme in LIBVIRT_REMOTE_SCHEMES)
    if parts.scheme not in LIBVIRT_REMOTE_SCHEMES:
        raise ValidationError(f"Use {LIBVIRT_LOCAL_URI} or one of {allowed}.", code="invalid_uri_scheme")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValidationError(
            "Remove the query string: the portal sets connection parameters itself.", code="invalid_uri"
        )
    if parts.path != "/system":
        raise ValidationError("The URI must end in /system.", code="invalid_uri")
    if parts.password is not None:
        raise ValidationError("Do not put a password in the URI.", code="invalid_uri")
    if parts.username is not None:
        if not value.startswith(LIBVIRT_SSH_SCHEMES):
            raise ValidationError(f"{parts.scheme}:// URIs take no user name.", code="invalid_uri")
        validate_ssh_user(parts.username)
    host = parts.hostname
    if not host:
        raise ValidationError("The URI needs a host address.", code="invalid_uri")
    netloc_host = parts.netloc.rpartition("@")[2]
    if ":" in host and not netloc_host.startswith("["):
        raise ValidationError("Put an IPv6 address in brackets: qemu+ssh://[2001:db8::1]/system.", code="invalid_uri")
    # urlsplit lowercases hostname; validate what was typed.
    typed_host = netloc_host[1:].partition("]")[0] if netloc_host.startswith("[") else netloc_host.partition(":")[0]
    validate_address(typed_host)
    if port is not None:
        validate_port(port)


def default_libvirt_uri(*, address: str, ssh_user: str, ssh_port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"qemu+ssh://{ssh_user}@{host}:{ssh_port}/system"


def parse_host_tags(text: str) -> list[str]:
    """Tags typed as "rack-3, ssd gpu" → ["gpu", "rack-3", "ssd"] (sorted, no repeats), validated."""
    tags = sorted({tag for tag in re.split(r"[\s,]+", text or "") if tag})
    validate_host_tags(tags)
    return tags


def validate_host_tags(value) -> None:
    if not isinstance(value, list) or len(value) > MAX_HOST_TAGS:
        raise ValidationError(f"Give at most {MAX_HOST_TAGS} tags.", code="invalid_host_tags")
    for tag in value:
        if not isinstance(tag, str) or not HOST_TAG_RE.match(tag):
            raise ValidationError(
                f"Tag {str(tag)[:40]!r}: use 1–32 letters, digits, '.', '_', ':' or '-', separated by commas or spaces.",
                code="invalid_host_tags",
            )
