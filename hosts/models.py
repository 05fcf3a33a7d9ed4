"""Inventory: hypervisor hosts (with what we observed about them), their guests, and the one
lease per guest that says which operation may change it right now."""

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone

from core.choices import RoleChoices

from .choices import (
    HOST_CONNECTABLE_STATES,
    DiskStorageChoices,
    GuestLeaseKindChoices,
    HostAuthMethodChoices,
    HostChangeStatusChoices,
    HostLifecycleChoices,
    HostStatusChoices,
    VMStateChoices,
)
from .validators import (
    default_libvirt_uri,
    validate_address,
    validate_host_name,
    validate_host_tags,
    validate_libvirt_uri,
    validate_ssh_user,
)


class PortalKey(models.Model):
    """The portal's own SSH key pair; admins install its public key on hosts. One row."""

    private_key_encrypted = models.TextField()
    public_key = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return "portal key"


class HostQuerySet(models.QuerySet):
    def in_service(self):
        return self.filter(lifecycle=HostLifecycleChoices.ACTIVE)

    def not_removed(self):
        return self.exclude(lifecycle=HostLifecycleChoices.REMOVED)


class InServiceHostManager(models.Manager.from_queryset(HostQuerySet)):
    """``Host.objects``: the hosts in service only, so every candidate list, placement, the
    watcher and the periodic refresh leave decommissioned and removed hosts out by default."""

    def get_queryset(self):
        return super().get_queryset().in_service()


class Host(models.Model):
    """A libvirt host as configured by an admin, with its pinned SSH host key and reachability.

    ``Host.objects`` holds the hosts in service; ``Host.all_objects`` (Django's default manager,
    so detail pages, related records and form validation see every row) also holds the
    decommissioned ones and the tombstones of removed ones: a removed host keeps its row (name,
    id, when and by whom removed; credentials wiped) so migrations, evacuations and the audit
    still point at it.
    """

    host_paths = ("pk",)  # hosts.permissions: who may see it, act on it

    name = models.CharField(max_length=63, validators=[validate_host_name])
    address = models.CharField(max_length=253, validators=[validate_address])
    ssh_port = models.PositiveIntegerField(default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    ssh_user = models.CharField(max_length=32, default="root", validators=[validate_ssh_user])
    auth_method = models.CharField(max_length=16, choices=HostAuthMethodChoices.choices)
    # Uploaded private key (PEM) or password, Fernet-encrypted; empty for the portal key.
    secret_encrypted = models.TextField(blank=True)
    # Empty means the default qemu+ssh://user@address:port/system.
    libvirt_uri = models.CharField(max_length=300, blank=True, validators=[validate_libvirt_uri])

    # Pinned SSH host key, "type base64", set only after an admin confirmed its fingerprint.
    host_key = models.TextField(blank=True)
    host_key_fingerprint = models.CharField(max_length=80, blank=True)
    host_key_trusted_at = models.DateTimeField(null=True, blank=True)
    # The key the host presented last, waiting for an admin to confirm it.
    presented_host_key = models.TextField(blank=True)
    presented_host_key_fingerprint = models.CharField(max_length=80, blank=True)
    presented_host_key_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(
        max_length=16, choices=HostStatusChoices.choices, default=HostStatusChoices.PENDING_TRUST
    )
    # Set by an admin: no migrations into this host (preflight fails), guests may still leave it.
    in_maintenance = models.BooleanField(default=False)
    maintenance_since = models.DateTimeField(null=True, blank=True)  # when in_maintenance was last set
    last_error = models.TextField(blank=True)
    last_error_hint = models.TextField(blank=True)
    last_checked = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    notes = models.TextField(blank=True, max_length=4000)
    tags = models.JSONField(default=list, blank=True, validators=[validate_host_tags])

    lifecycle = models.CharField(
        max_length=16, choices=HostLifecycleChoices.choices, default=HostLifecycleChoices.ACTIVE
    )
    decommissioned_at = models.DateTimeField(null=True, blank=True)
    decommissioned_by_label = models.CharField(max_length=150, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    removed_by_label = models.CharField(max_length=150, blank=True)

    all_objects = HostQuerySet.as_manager()
    objects = InServiceHostManager()

    class Meta:
        ordering = ["name"]
        default_manager_name = "all_objects"
        constraints = [
            # A removed host's tombstone keeps its name without holding it.
            models.UniqueConstraint(
                Lower("name"), name="hosts_host_name_ci_unique_unless_removed",
                condition=~models.Q(lifecycle="removed"),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_libvirt_uri(self) -> str:
        return self.libvirt_uri or default_libvirt_uri(
            address=self.address, ssh_user=self.ssh_user, ssh_port=self.ssh_port
        )

    @property
    def is_connectable(self) -> bool:
        return (
            bool(self.host_key)
            and self.status in HOST_CONNECTABLE_STATES
            and self.lifecycle != HostLifecycleChoices.REMOVED
        )

    @property
    def in_service(self) -> bool:
        return self.lifecycle == HostLifecycleChoices.ACTIVE

    @property
    def is_removed(self) -> bool:
        return self.lifecycle == HostLifecycleChoices.REMOVED


class HostFacts(models.Model):
    """What the last successful refresh read from the host (kept when it becomes unreachable)."""

    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="facts")
    hostname = models.CharField(max_length=255, blank=True)
    host_uuid = models.CharField(max_length=64, blank=True)
    os_pretty_name = models.CharField(max_length=255, blank=True)
    os_id = models.CharField(max_length=64, blank=True)
    os_version_id = models.CharField(max_length=64, blank=True)
    arch = models.CharField(max_length=32, blank=True)
    cpu_vendor = models.CharField(max_length=64, blank=True)
    cpu_model = models.CharField(max_length=128, blank=True)
    cpu_features = models.JSONField(default=list, blank=True)
    hypervisor = models.CharField(max_length=64, blank=True)
    hypervisor_version = models.CharField(max_length=32, blank=True)
    libvirt_version = models.CharField(max_length=32, blank=True)
    domain_types = models.JSONField(default=list, blank=True)
    machine_types = models.JSONField(default=list, blank=True)
    memory_total_kib = models.PositiveBigIntegerField(default=0)
    memory_free_kib = models.PositiveBigIntegerField(default=0)
    cpus = models.PositiveIntegerField(default=0)
    gathered_at = models.DateTimeField(default=timezone.now)
    # When os-release and the disks' placement were last read on the host (hosts.probe_rules).
    probed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"facts of {self.host_id}"


class VirtualMachine(models.Model):
    """A libvirt domain as last seen on its host."""

    host_paths = ("host",)  # hosts.permissions: who may see it, act on it

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="vms")
    uuid = models.UUIDField()
    name = models.CharField(max_length=255)
    state = models.CharField(max_length=16, choices=VMStateChoices.choices)
    state_reason = models.CharField(max_length=32, blank=True)
    libvirt_id = models.IntegerField(null=True, blank=True)
    vcpus = models.PositiveIntegerField(default=0)
    memory_kib = models.PositiveBigIntegerField(default=0)
    max_memory_kib = models.PositiveBigIntegerField(default=0)
    arch = models.CharField(max_length=32, blank=True)
    domain_type = models.CharField(max_length=16, blank=True)
    machine = models.CharField(max_length=64, blank=True)
    persistent = models.BooleanField(default=True)
    autostart = models.BooleanField(default=False)
    cpu_mode = models.CharField(max_length=32, blank=True)
    cpu_model = models.CharField(max_length=128, blank=True)
    # Placement tags from the guest's libvirt metadata (hosts.adapters.libvirt.PlacementTags).
    pinned = models.BooleanField(default=False)
    pin_to = models.CharField(max_length=63, blank=True)
    anti_affinity = models.JSONField(default=list, blank=True)
    host_devices = models.PositiveSmallIntegerField(default=0)
    # The last persistent definition a refresh read (secrets included, so Fernet-encrypted), for
    # defining the guest elsewhere when this host dies; empty when none was read or it was larger
    # than MAX_DEFINITION_CHARS.
    definition_encrypted = models.TextField(blank=True)
    definition_at = models.DateTimeField(null=True, blank=True)
    managed_save = models.BooleanField(default=False)  # its next start resumes a managed save
    # Set when this copy was replaced by one on another host (the guests of a dead host brought
    # back elsewhere): the row stays until the host says the copy is gone.
    superseded_at = models.DateTimeField(null=True, blank=True)
    superseded_note = models.CharField(max_length=255, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)  # when a refresh or an event last saw the guest
    # When the recorded state was true: the read of the refresh that wrote it, or the arrival of the
    # lifecycle event that did. A refresh that read the host before it keeps it (live_state.read_is_newer).
    state_at = models.DateTimeField(null=True, blank=True)

    # A domain XML is a few KiB; this bounds what a hostile or odd host can make us store per guest.
    MAX_DEFINITION_CHARS = 256 * 1024

    class Meta:
        ordering = ["name", "host__name"]
        constraints = [models.UniqueConstraint(fields=["host", "uuid"], name="hosts_vm_host_uuid_unique")]

    def __str__(self) -> str:
        return self.name


class VirtualDisk(models.Model):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="disks")
    target = models.CharField(max_length=32)
    device = models.CharField(max_length=16, blank=True)
    source_type = models.CharField(max_length=16, blank=True)
    # A path for file/block disks, the volume/image name for network disks.
    source = models.TextField(blank=True)
    protocol = models.CharField(max_length=16, blank=True)
    format = models.CharField(max_length=16, blank=True)
    readonly = models.BooleanField(default=False)
    shareable = models.BooleanField(default=False)
    storage = models.CharField(max_length=16, choices=DiskStorageChoices.choices, default=DiskStorageChoices.UNKNOWN)
    storage_fstype = models.CharField(max_length=32, blank=True)
    storage_mountpoint = models.TextField(blank=True)
    # Bytes, from the block group of the last refresh's bulk stats (hosts.adapters.stats); None:
    # never recorded (hosts.disk_sizes assumes ASSUMED_DISK_BYTES for a copy then, and says so).
    capacity_bytes = models.PositiveBigIntegerField(null=True, blank=True)  # what the guest sees
    allocation_bytes = models.PositiveBigIntegerField(null=True, blank=True)  # what holds data
    physical_bytes = models.PositiveBigIntegerField(null=True, blank=True)  # the file or device

    class Meta:
        ordering = ["target"]

    def __str__(self) -> str:
        return self.target


class VirtualNic(models.Model):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="nics")
    mac = models.CharField(max_length=32, blank=True)
    type = models.CharField(max_length=16, blank=True)
    source = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["mac"]

    def __str__(self) -> str:
        return self.mac


class GuestLease(models.Model):
    """The one operation allowed to change a guest right now (a migration, a power action, …).

    Claimed in the transaction that creates the operation's record and deleted when that
    operation ends (hosts/leases.py). The UNIQUE guest UUID is the arbiter: of two requests
    at once, the database lets exactly one insert its row. The owner is any record (this app
    must not know the apps built on it), kept with a label and a link for the refusal message.
    """

    # The UUID, not the inventory row: the row moves between hosts (or goes) while a migration runs.
    guest_uuid = models.UUIDField(unique=True)
    guest_name = models.CharField(max_length=255)
    kind = models.CharField(max_length=32, choices=GuestLeaseKindChoices.choices)
    owner_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    owner_id = models.PositiveBigIntegerField()
    owner = GenericForeignKey("owner_type", "owner_id")
    # Snapshots taken at claim time: the message still reads right if the owner row is gone.
    owner_label = models.CharField(max_length=255)
    owner_url = models.CharField(max_length=300, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150)
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["since", "pk"]
        indexes = [models.Index(fields=["owner_type", "owner_id"], name="hosts_lease_owner_idx")]

    def __str__(self) -> str:
        return f"{self.guest_name} held by {self.owner_label}"


class HostLoad(models.Model):
    """One point of a host's load: the average of what refreshes measured in a bucket of ``step_s`` seconds.

    Fine points (5 min) are rolled into hourly ones after a week; hourly ones go after 90 days
    (``hosts.load.RETENTION``, ``services.load_retention_sweep``).
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="load_points")
    step_s = models.PositiveIntegerField()  # 300 or 3600
    at = models.DateTimeField()  # start of the bucket (UTC)
    samples = models.PositiveSmallIntegerField(default=1)  # refreshes averaged into this point
    memory_used_kib = models.PositiveBigIntegerField()
    memory_free_kib = models.PositiveBigIntegerField()
    cpu_pct = models.FloatField(null=True)  # None: no earlier sample to take a delta from

    class Meta:
        ordering = ["host", "step_s", "at"]
        constraints = [models.UniqueConstraint(fields=["host", "step_s", "at"], name="hosts_hostload_one_per_bucket")]
        # The fleet's latest points and the retention sweep read one step's points by time, every host at once.
        indexes = [models.Index(fields=["step_s", "at"], name="hosts_hostload_step_at_idx")]


class GuestLoad(models.Model):
    """One point of a guest's load on the host it ran on (same buckets as ``HostLoad``)."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="guest_load_points")
    vm_uuid = models.UUIDField()
    step_s = models.PositiveIntegerField()
    at = models.DateTimeField()
    samples = models.PositiveSmallIntegerField(default=1)
    memory_kib = models.PositiveBigIntegerField()
    vcpu_pct = models.FloatField(null=True)

    class Meta:
        ordering = ["vm_uuid", "step_s", "at"]
        # Host and bucket first: one refresh's points (one host, one bucket) sit side by side in the
        # key, so its upsert touches a page or two of it rather than one page per guest; the key
        # also serves what the host index did. The time index serves reads of one step by time.
        constraints = [
            models.UniqueConstraint(fields=["host", "step_s", "at", "vm_uuid"], name="hosts_guestload_bucket_key"),
        ]
        indexes = [models.Index(fields=["step_s", "at"], name="hosts_guestload_step_at_idx")]


class LoadCounters(models.Model):
    """The cumulative CPU counters of a host's last refresh, to take the next one's deltas from."""

    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="load_counters")
    at = models.DateTimeField()
    cpu_busy_ns = models.PositiveBigIntegerField()
    cpu_total_ns = models.PositiveBigIntegerField()
    vcpu_ns = models.JSONField(default=dict)  # guest uuid -> cumulative vCPU ns
    vcpu_delay_ns = models.JSONField(default=dict)  # guest uuid -> cumulative ns its vCPUs waited for a host CPU


class HostChange(models.Model):
    """A change of how the portal reaches a host, saved only once it has been checked.

    The host key at the (new) address is read and shown, an admin confirms its fingerprint,
    then a job logs in with the new settings; only if that works are they copied onto the host
    (``services.host_change_apply``). Until then the host keeps working as before.
    """

    host_paths = ("host",)  # hosts.permissions: who may see it, act on it

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="changes")
    status = models.CharField(
        max_length=24, choices=HostChangeStatusChoices.choices, default=HostChangeStatusChoices.READING_KEY
    )
    # The proposed connection settings without secrets: address, ssh_port, ssh_user, auth_method, libvirt_uri.
    proposed = models.JSONField(default=dict)
    # The new private key or password, Fernet-encrypted; empty keeps the host's own secret.
    secret_encrypted = models.TextField(blank=True)
    presented_host_key = models.TextField(blank=True)
    presented_host_key_fingerprint = models.CharField(max_length=80, blank=True)
    error = models.TextField(blank=True)
    hint = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_label = models.CharField(max_length=150)
    created = models.DateTimeField(default=timezone.now)
    ended = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"connection change #{self.pk} of {self.host.name}"

    def get_absolute_url(self) -> str:
        return reverse("hosts:host_change", kwargs={"pk": self.host_id, "change_pk": self.pk})


class HostGroup(models.Model):
    """Hosts a team owns. A host may be in several groups; a user's role on a host is the
    highest of their global role and their grants on the host's groups (hosts/permissions.py)."""

    name = models.CharField(max_length=63, unique=True, validators=[validate_host_name])
    hosts = models.ManyToManyField(Host, related_name="host_groups", blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class HostGroupGrant(models.Model):
    """A user's role on one host group."""

    group = models.ForeignKey(HostGroup, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="host_group_grants")
    role = models.CharField(max_length=16, choices=RoleChoices.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group", "user"], name="hosts_grant_group_user_unique")]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.group}"


class HostBudget(models.Model):
    """What an admin set of a host's guest capacity; a missing row or an empty field means the portal's default.

    ``hosts.capacity`` turns it and the host's facts into the budget placement and the
    recommendations judge (memory for guests, vCPUs the host may run).
    """

    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="budget")
    # Memory for guests, MiB; None: the host's memory minus VMPORTAL_FLEET_HOST_RESERVE_MIB.
    guest_memory_mib = models.PositiveIntegerField(null=True, blank=True)
    # vCPUs per host CPU; None: VMPORTAL_FLEET_VCPU_RATIO.
    vcpu_ratio = models.FloatField(null=True, blank=True)
    updated = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"budget of {self.host_id}"
