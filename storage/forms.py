from django import forms
from django.core.exceptions import ValidationError

from core.ids import IdModelChoiceField, IdModelMultipleChoiceField
from hosts.models import Host

from .choices import NfsVersionChoices, ServerImplChoices
from .services import inventory_hosts
from .validation import DEFAULT_OPTIONS, validate_share_request


class _HostChoice(IdModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.name} ({obj.address})"


class _HostMultiChoice(IdModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.name} ({obj.address})"


class ShareForm(forms.Form):
    """The NFS wizard's inputs. The whole request is checked by validation.validate_share_request."""

    server = _HostChoice(
        queryset=Host.objects.order_by("name"), empty_label="Choose the server…", label="NFS server",
        help_text="The host that exports the directory.",
    )
    export_path = forms.CharField(
        max_length=300, strip=False, label="Export directory (on the server)", initial="/srv/vmstore",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
        help_text="Absolute path; created if missing, owned by QEMU's user, mode 2770.",
    )
    clients = _HostMultiChoice(
        queryset=Host.objects.order_by("name"), widget=forms.CheckboxSelectMultiple, label="Client hosts",
        help_text="They mount the export and get a libvirt storage pool over it.",
    )
    mount_path = forms.CharField(
        max_length=300, strip=False, label="Mount path (the same on every client)", initial="/mnt/vmstore",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
        help_text="Guests' disk paths are the same on every host: what live migration needs.",
    )
    options = forms.CharField(
        max_length=200, strip=False, initial=DEFAULT_OPTIONS, label="Export options",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
        help_text="As in exports(5), e.g. rw,sync,root_squash. no_root_squash needs the confirmation below.",
    )
    nfs_version = forms.ChoiceField(choices=NfsVersionChoices.choices, initial=NfsVersionChoices.V4_1, label="NFS version")
    export_to = forms.CharField(
        max_length=500, required=False, strip=False, label="Allowed clients (optional)",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off", "placeholder": "the client hosts"}),
        help_text="Empty: exactly the client hosts. Or inventory hosts and CIDRs such as 10.0.0.0/24; '*' needs the confirmation below.",
    )
    server_impl = forms.ChoiceField(
        choices=ServerImplChoices.choices, required=False, label="Server implementation",
        help_text="Detected from what is installed or running on the server, unless you choose.",
    )
    confirm_risky = forms.BooleanField(
        required=False, label="I understand: allow no_root_squash or '*' for this export",
    )

    def __init__(self, *args, hosts=None, **kwargs):
        """``hosts``: the hosts the user may choose from (default: every host in service)."""
        super().__init__(*args, **kwargs)
        if hosts is not None:
            self.fields["server"].queryset = hosts.order_by("name")
            self.fields["clients"].queryset = hosts.order_by("name")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.request = validate_share_request(
                server=cleaned["server"].name,
                clients=[h.name for h in cleaned["clients"]],
                export_path=cleaned["export_path"],
                mount_path=cleaned["mount_path"],
                export_to=cleaned.get("export_to", ""),
                options=cleaned["options"],
                nfs_version=cleaned["nfs_version"],
                server_impl=cleaned.get("server_impl", ""),
                confirm_risky=cleaned.get("confirm_risky", False),
                inventory=inventory_hosts(),
            )
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                for message in messages:
                    self.add_error(name if name in self.fields else None, message)
        return cleaned

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        return {
            "server": data["server"].name,
            "clients": [h.name for h in data["clients"]],
            "export_path": data["export_path"],
            "mount_path": data["mount_path"],
            "export_to": data.get("export_to", ""),
            "options": data["options"],
            "nfs_version": data["nfs_version"],
            "server_impl": data.get("server_impl", ""),
            "confirm_risky": data.get("confirm_risky", False),
        }
