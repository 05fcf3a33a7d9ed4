"""The portal's balancing settings (one row) and the recommendations an operator dismissed."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone


class MetricChoices(models.TextChoices):
    MEMORY = "memory", "Memory"
    CPU = "cpu", "CPU"


class FleetSettings(models.Model):
    """What the recommendations balance on, and their thresholds; one row (``FleetSettings.current()``).

    Written only by ``services.fleet_settings_update`` (audited); until then the environment's
    defaults (``VMPORTAL_FLEET_*``) apply.
    """

    metric = models.CharField(max_length=8, choices=MetricChoices.choices, default=MetricChoices.MEMORY)
    threshold_pts = models.FloatField(validators=[MinValueValidator(1), MaxValueValidator(100)])
    margin_pts = models.FloatField(validators=[MinValueValidator(0), MaxValueValidator(100)])
    cooldown_hours = models.FloatField(validators=[MinValueValidator(0), MaxValueValidator(24 * 90)])
    hold_minutes = models.PositiveIntegerField(validators=[MaxValueValidator(7 * 24 * 60)])
    updated = models.DateTimeField(default=timezone.now)
    updated_by_label = models.CharField(max_length=150, blank=True)

    class Meta:
        verbose_name_plural = "fleet settings"

    def __str__(self) -> str:
        return f"fleet settings ({self.metric})"

    @classmethod
    def defaults(cls) -> "FleetSettings":
        return cls(metric=MetricChoices.MEMORY, threshold_pts=settings.VMPORTAL_FLEET_THRESHOLD_POINTS,
                   margin_pts=settings.VMPORTAL_FLEET_MARGIN_POINTS, cooldown_hours=settings.VMPORTAL_FLEET_COOLDOWN_HOURS,
                   hold_minutes=30)

    @classmethod
    def current(cls) -> "FleetSettings":
        """The saved row, or the defaults (unsaved) when nobody has changed them yet."""
        return cls.objects.order_by("pk").first() or cls.defaults()


class Dismissal(models.Model):
    """A recommendation an operator dismissed: hidden until it expires or the facts behind it change.

    ``before`` keeps each host's use (%) when it was dismissed; the recommendation with the same id
    comes back once any host's use has moved more than ``recommend.DISMISS_TOLERANCE_PTS`` or the
    hosts counted differ (``recommend.dismissal_holds``).
    """

    rec_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16)
    metric = models.CharField(max_length=8, choices=MetricChoices.choices)
    basis = models.CharField(max_length=16)
    summary = models.TextField(max_length=2000)
    before = models.JSONField(default=dict)
    reason = models.TextField(max_length=500)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=150)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["rec_id", "expires"], name="fleet_dismissal_rec_idx")]

    def __str__(self) -> str:
        return f"dismissal of {self.rec_id} by {self.actor_label}"
