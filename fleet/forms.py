"""Forms of the fleet pages: the portal's balancing settings and a dismissal."""

from django import forms

from .models import FleetSettings, MetricChoices
from .services import DISMISS_HOURS_MAX, REASON_MAX


class FleetSettingsForm(forms.Form):
    metric = forms.ChoiceField(choices=MetricChoices.choices, label="Balance on",
                               help_text="Memory: guests' memory against each host's memory budget. "
                                         "CPU: vCPUs against CPUs × overcommit ratio (assigned) or measured CPU use (used).")
    threshold_pts = forms.FloatField(min_value=1, max_value=100, label="Threshold (points of use)",
                                     help_text="Recommend moves when the busiest and least busy host differ by more.")
    margin_pts = forms.FloatField(min_value=0, max_value=100, label="Margin (points)",
                                  help_text="Never a move that lowers the spread by less.")
    cooldown_hours = forms.FloatField(min_value=0, max_value=24 * 90, label="Cool-down (hours)",
                                      help_text="A guest the balancer moved is not moved again within this time.")
    hold_minutes = forms.IntegerField(min_value=0, max_value=7 * 24 * 60, label="Hold time (minutes)",
                                      help_text="Measured basis: the spread must have lasted this long.")

    @classmethod
    def initial_from(cls, row: FleetSettings) -> dict:
        return {f: getattr(row, f) for f in cls.base_fields}


class DismissForm(forms.Form):
    rec_id = forms.RegexField(regex=r"^[0-9a-f]{1,64}$", error_messages={"invalid": "Not a recommendation id."})
    reason = forms.CharField(max_length=REASON_MAX, strip=True)
    hours = forms.IntegerField(min_value=1, max_value=DISMISS_HOURS_MAX, initial=24)
