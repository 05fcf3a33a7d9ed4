from django import forms
from django.core.exceptions import ValidationError

from hosts.adapters.errors import HostAuthError
from hosts.adapters.ssh import load_private_key

from .choices import HostAuthMethodChoices
from .models import Host
from .services import HostConnection
from .validators import (
    LIBVIRT_SSH_SCHEMES,
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

    def clean_name(self):
        name = self.cleaned_data["name"]
        if Host.objects.filter(name__iexact=name).exists():
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
            if not pem:
                raise ValidationError({"private_key_text": "Upload or paste the private key to log in with."})
            try:
                load_private_key(pem)
            except HostAuthError as exc:
                raise ValidationError({"private_key_text": f"{exc.message} {exc.hint}"}) from None
            cleaned["private_key_pem"] = pem
        elif method == HostAuthMethodChoices.PASSWORD:
            if not cleaned.get("password"):
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
        if address and port and Host.objects.filter(address__iexact=address, ssh_port=port).exists():
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
            password=data.get("password") if method == HostAuthMethodChoices.PASSWORD else None,
            libvirt_uri=data.get("libvirt_uri", ""),
        )


class HostTrustForm(forms.Form):
    """The fingerprint shown to the admin comes back with the POST, so a key that changed in
    between is not trusted by mistake."""

    fingerprint = forms.CharField(max_length=80, widget=forms.HiddenInput)
