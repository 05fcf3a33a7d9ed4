"""The wizard's options form (every field checked by the strict options parser, then for combinations),
and the cold-migration form (destination host and storage, checked against the inventory)."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from core.ids import IdModelChoiceField
from hosts.models import Host
from storage.choices import ShareStatusChoices
from storage.models import Share

from .options import INT_BOUNDS, MigrationOptions, TimeoutAction, from_dict, validate

MODE_CHOICES = (
    ("live", "Live — the guest keeps running while its memory is copied"),
    ("offline", "Offline — move the definition of a shut-off guest"),
)
TRANSPORT_CHOICES = (
    ("p2p", "Peer-to-peer — the source's libvirtd connects to the destination itself"),
    ("managed", "Managed — the portal drives both libvirt daemons"),
)
TIMEOUT_ACTION_CHOICES = (
    (TimeoutAction.ABORT.value, "Abort — the guest stays on the source"),
    (TimeoutAction.FORCE_COMPLETE.value, "Force complete — post-copy if allowed, else allow a longer pause"),
)


def _bounded(label: str, key: str, help_text: str) -> forms.IntegerField:
    low, high = INT_BOUNDS[key]
    return forms.IntegerField(required=False, min_value=low, max_value=high, label=label, help_text=help_text)


class MigrationOptionsForm(forms.Form):
    mode = forms.ChoiceField(choices=MODE_CHOICES, widget=forms.RadioSelect, initial="live", label="Mode")
    transport = forms.ChoiceField(
        choices=TRANSPORT_CHOICES, widget=forms.RadioSelect, initial="p2p", label="Connection",
        help_text="Peer-to-peer needs the source host to reach the destination's libvirt URI itself "
                  "(for qemu+ssh: root's SSH key and known_hosts on the source).",
    )
    tunnelled = forms.BooleanField(
        required=False, label="Tunnelled",
        help_text="Carry the data over libvirtd's connection: no migration ports (49152–49215) needed, "
                  "but slower. Peer-to-peer only.",
    )
    copy_storage = forms.BooleanField(
        required=False, label="Copy non-shared storage",
        help_text="Copy writable local disks to the destination (like --copy-storage-all).",
    )
    auto_converge = forms.BooleanField(
        required=False, label="Auto-converge",
        help_text="Slow the guest's vCPUs down when it changes memory faster than it can be sent.",
    )
    allow_postcopy = forms.BooleanField(
        required=False, label="Allow post-copy",
        help_text="Lets Force complete switch the guest to the destination at once; it then fetches the rest "
                  "of its memory. If the network fails during post-copy, the guest is lost.",
    )
    compressed = forms.BooleanField(
        required=False, label="Compression", help_text="Compress repeated memory pages (costs CPU on both hosts)."
    )
    bandwidth_mibps = _bounded("Bandwidth limit (MiB/s)", "bandwidth_mibps", "Empty: no limit.")
    max_downtime_ms = _bounded(
        "Maximum downtime (ms)", "max_downtime_ms",
        "The longest pause allowed for the final switch-over. Empty: QEMU's default (300 ms).",
    )
    persist_destination = forms.BooleanField(
        required=False, initial=True, label="Persist on destination",
        help_text="Define the guest on the destination (--persistent).",
    )
    undefine_source = forms.BooleanField(
        required=False, initial=True, label="Undefine on source",
        help_text="Remove the definition from the source (--undefinesource).",
    )
    completion_timeout_s = _bounded(
        "Completion timeout (s)", "completion_timeout_s", "Empty: none. Then the timeout action below runs."
    )
    timeout_action = forms.ChoiceField(
        choices=TIMEOUT_ACTION_CHOICES, widget=forms.RadioSelect, initial=TimeoutAction.ABORT.value, label="When the timeout is reached"
    )
    # Pre-selected destination (migrate back); the plan still checks every candidate.
    destination = IdModelChoiceField(queryset=Host.objects.all(), required=False, widget=forms.HiddenInput)

    options: MigrationOptions

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            options = from_dict({
                "live": data["mode"] == "live",
                "peer_to_peer": data["transport"] == "p2p",
                "tunnelled": data["tunnelled"],
                "copy_storage": data["copy_storage"],
                "auto_converge": data["auto_converge"],
                "allow_postcopy": data["allow_postcopy"],
                "compressed": data["compressed"],
                "bandwidth_mibps": data["bandwidth_mibps"],
                "max_downtime_ms": data["max_downtime_ms"],
                "persist_destination": data["persist_destination"],
                "undefine_source": data["undefine_source"],
                "completion_timeout_s": data["completion_timeout_s"],
                "timeout_action": data["timeout_action"],
            })
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        problems = validate(options)
        if problems:
            raise ValidationError(problems)
        self.options = options
        return data

    @staticmethod
    def initial_for(options: MigrationOptions, *, destination: Host | None = None) -> dict:
        return {
            "mode": "live" if options.live else "offline",
            "transport": "p2p" if options.peer_to_peer else "managed",
            "tunnelled": options.tunnelled,
            "copy_storage": options.copy_storage,
            "auto_converge": options.auto_converge,
            "allow_postcopy": options.allow_postcopy,
            "compressed": options.compressed,
            "bandwidth_mibps": options.bandwidth_mibps,
            "max_downtime_ms": options.max_downtime_ms,
            "persist_destination": options.persist_destination,
            "undefine_source": options.undefine_source,
            "completion_timeout_s": options.completion_timeout_s,
            "timeout_action": options.timeout_action,
            "destination": destination.pk if destination else None,
        }


# ---------------------------------------------------------------------------
# Cold migration

OWN_STORAGE_LABEL = "Destination's own storage (same directories, copied over SSH)"


class ColdMigrationForm(forms.Form):
    """Where a shut-off guest goes: a host (its own one = only move the disks) and the storage.

    Ids come from radio buttons but are checked like any input: an id that is not in the
    inventory, or a combination that moves nothing, is refused with what to do instead.
    """

    destination = IdModelChoiceField(
        queryset=Host.objects.none(), widget=forms.RadioSelect, label="Destination host",
        error_messages={
            "required": "Choose the host the guest should be defined on.",
            "invalid_choice": "That host is not in the inventory (any more): choose one from the list.",
        },
    )
    share = IdModelChoiceField(
        queryset=Share.objects.none(), required=False, blank=True, widget=forms.RadioSelect, label="Storage for its disks",
        empty_label=OWN_STORAGE_LABEL,
        error_messages={"invalid_choice": "That share is not in the inventory (any more): choose one from the list."},
    )
    start = forms.BooleanField(
        required=False, label="Start it afterwards",
        help_text="Start the guest at its destination once its disks are copied and verified.",
    )
    keep_source = forms.BooleanField(
        required=False, label="Keep the original disk files",
        help_text="Leave the originals on the source after success (they are removed otherwise).",
    )

    def __init__(self, *args, vm, destinations=None, shares=None, **kwargs):
        """``destinations`` / ``shares``: the querysets the user may choose from (default: all)."""
        super().__init__(*args, **kwargs)
        self.vm = vm
        destination = self.fields["destination"]
        destination.queryset = (Host.objects.all() if destinations is None else destinations).order_by("name")
        destination.label_from_instance = self._host_label
        share = self.fields["share"]
        share.queryset = (Share.objects.all() if shares is None else shares).select_related(
            "server").prefetch_related("clients").order_by("server__name", "export_path")
        share.label_from_instance = _share_label

    def _host_label(self, host: Host) -> str:
        if host.pk == self.vm.host_id:
            return f"{host.name}: this host — only move its disks onto shared storage"
        notes = []
        if not host.is_connectable:
            notes.append(host.get_status_display().lower())
        if host.in_maintenance:
            notes.append("in maintenance")
        return host.name + (f" ({', '.join(notes)})" if notes else "")

    def clean(self):
        data = super().clean()
        destination, share = data.get("destination"), data.get("share")
        if destination is None or self.errors:
            return data
        if destination.pk == self.vm.host_id and share is None:
            raise ValidationError(
                f"{self.vm.name} is already on {destination.name}, and its own storage is where its disks are: "
                "nothing would move. Choose a share to move its disks onto, or another destination host.",
                code="nothing-moves",
            )
        if share is not None and share.path_seen_by(destination) is None:
            self.add_error("share", ValidationError(
                f"{destination.name} does not mount {share}, so it could not open the disks there. "
                f"Choose a share {destination.name} mounts, or add it as a client on the share's page.",
                code="not-mounted",
            ))
        return data


def _share_label(share: Share) -> str:
    clients = sorted(h.name for h in share.clients.all())
    mounted = f"mounted by {', '.join(clients)}" if clients else "mounted by no host yet"
    status = "" if share.status == ShareStatusChoices.READY else f", {share.get_status_display().lower()}"
    return f"{share} — exported by {share.server.name}, {mounted} at {share.mount_path}{status}"
