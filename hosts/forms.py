from django import forms
from django.core.exceptions import ValidationError

from hosts.adapters.errors import HostAuthError
from hosts.adapters.ssh import load_private_key

from .choices import HostAuthMethodChoices
from .models import Host
from .services import HostConnection
from .validators import (
    LIBVIRT_SSH_SCHEMES,
    parse_host_tags,
    validate_address,
    validate_host_name,
    validate_libvirt_uri,
    validate_port,
    validate_ssh_user,
)

MAX_PRIVATE_KEY_BYTES = 16 * 1024


class HostAddForm(forms.Form):
    name = forms.CharField(
        max_length=63, validators=[validate_host_name], help_text="How the portal names this host, e.g. kvm-01."
    )
    address = forms.CharField(
        max_length=253, validators=[validate_address], help_text="DNS name, IPv4 or IPv6 address."
    )
    ssh_port = forms.IntegerField(initial=22, min_value=1, max_value=65535, label="SSH port")
    ssh_user = forms.CharField(max_length=32, initial="root", validators=[validate_ssh_user], label="SSH user")
    auth_method = forms.ChoiceField(
        choices=HostAuthMethodChoices.choices,
        initial=HostAuthMethodChoices.PORTAL_KEY,
        widget=forms.RadioSelect,
        label="Log in with",
    )
    private_key_file = forms.FileField(required=False, label="Private key file")
    private_key_text = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocomplete": "off"}),
        label="…or paste the private key",
    )
    password = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=False)
    libvirt_uri = forms.CharField(
        required=False,
        max_length=300,
        validators=[validate_libvirt_uri],
        label="libvirt URI (optional)",
        help_text="Default qemu+ssh://USER@ADDRESS:PORT/system. Also accepted: qemu+libssh, qemu+tcp, qemu+tls.",
    )

    # The host being edited (HostEditForm): it does not clash with itself.
    host: Host | None = None

    def _others(self):
        hosts = Host.all_objects.not_removed()
        return hosts.exclude(pk=self.host.pk) if self.host is not None else hosts

    def _keeps_secret(self, method) -> bool:
        """An edit may leave the key / password empty to keep the host's own."""
        return self.host is not None and self.host.auth_method == method

    def clean_name(self):
        name = self.cleaned_data["name"]
        if self._others().filter(name__iexact=name).exists():
            raise ValidationError(f"A host named {name!r} already exists.")
        return name

    def clean_ssh_port(self):
        port = self.cleaned_data["ssh_port"]
        validate_port(port)
        return port

    def _private_key(self) -> str:
        upload = self.cleaned_data.get("private_key_file")
        if upload:
            if upload.size > MAX_PRIVATE_KEY_BYTES:
                raise ValidationError({"private_key_file": "That file is too large to be a private key."})
            try:
                return upload.read().decode("ascii")
            except UnicodeDecodeError:
                raise ValidationError({"private_key_file": "That file is not a text private key."}) from None
        return self.cleaned_data.get("private_key_text", "").strip()

    def clean(self):
        cleaned = super().clean()
        method = cleaned.get("auth_method")
        if method == HostAuthMethodChoices.PRIVATE_KEY:
            pem = self._private_key()
            if not pem and self._keeps_secret(method):
                pem = None
            elif not pem:
                raise ValidationError({"private_key_text": "Upload or paste the private key to log in with."})
            if pem is not None:
                try:
                    load_private_key(pem)
                except HostAuthError as exc:
                    raise ValidationError({"private_key_text": f"{exc.message} {exc.hint}"}) from None
            cleaned["private_key_pem"] = pem
        elif method == HostAuthMethodChoices.PASSWORD:
            if not cleaned.get("password") and not self._keeps_secret(method):
                raise ValidationError({"password": "Enter the SSH password."})
            uri = cleaned.get("libvirt_uri", "")
            if not uri or uri.startswith(LIBVIRT_SSH_SCHEMES):
                raise ValidationError(
                    {
                        "auth_method": "libvirt over SSH logs in with a key, not a password. Use the portal's key "
                        "or an uploaded key, or give a qemu+tls:// or qemu+tcp:// libvirt URI."
                    }
                )
        address, port = cleaned.get("address"), cleaned.get("ssh_port")
        if address and port and self._others().filter(address__iexact=address, ssh_port=port).exists():
            raise ValidationError({"address": f"A host at {address}:{port} is already in the inventory."})
        return cleaned

    def connection(self) -> HostConnection:
        data = self.cleaned_data
        method = HostAuthMethodChoices(data["auth_method"])
        return HostConnection(
            address=data["address"],
            ssh_port=data["ssh_port"],
            ssh_user=data["ssh_user"],
            auth_method=method,
            private_key_pem=data.get("private_key_pem") if method == HostAuthMethodChoices.PRIVATE_KEY else None,
            password=(data.get("password") or None) if method == HostAuthMethodChoices.PASSWORD else None,
            libvirt_uri=data.get("libvirt_uri", ""),
        )


class HostEditForm(HostAddForm):
    """Everything an admin set when adding the host, plus notes and tags. The key or password
    may stay empty to keep the one stored; a change of how the host is reached is checked
    (host key shown and confirmed, then a login) before it is saved."""

    notes = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 3}))
    tags = forms.CharField(
        required=False, max_length=800, help_text="Short labels separated by commas or spaces, e.g. rack-3, ssd."
    )

    def __init__(self, *args, host: Host, **kwargs):
        self.host = host
        initial = {
            "name": host.name, "address": host.address, "ssh_port": host.ssh_port, "ssh_user": host.ssh_user,
            "auth_method": host.auth_method, "libvirt_uri": host.libvirt_uri, "notes": host.notes,
            "tags": ", ".join(host.tags), **kwargs.pop("initial", {}),
        }
        super().__init__(*args, initial=initial, **kwargs)
        self.fields["private_key_text"].label = "…or paste a new private key (empty: keep the stored one)"
        self.fields["password"].help_text = "Empty: keep the stored password."

    def clean_tags(self):
        return parse_host_tags(self.cleaned_data.get("tags", ""))


class HostTrustForm(forms.Form):
    """The fingerprint shown to the admin comes back with the POST, so a key that changed in
    between is not trusted by mistake."""

    fingerprint = forms.CharField(max_length=80, widget=forms.HiddenInput)
