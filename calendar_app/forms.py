"""The window form: what a person enters, bounded and turned into a WindowSpec for the service."""

from __future__ import annotations

from django import forms
from django.conf import settings

from core.ids import IdModelMultipleChoiceField
from hosts.models import Host

from .choices import OnEndChoices, OnStartChoices
from .models import NOTES_MAX, RRULE_MAX, TITLE_MAX
from .recurrence import RecurrenceError, zone_for
from .services import WindowSpec
from .timeinput import TimeInputError, parse_time


def clean_zone_name(value: str) -> str:
    """A zone name that exists, or the form's error saying so."""
    zone = value.strip()
    try:
        zone_for(zone)
    except RecurrenceError as exc:
        raise forms.ValidationError(str(exc)) from None
    return zone


class WindowForm(forms.Form):
    title = forms.CharField(max_length=TITLE_MAX)
    hosts = IdModelMultipleChoiceField(queryset=Host.objects.order_by("name"),
                                           widget=forms.CheckboxSelectMultiple)
    start = forms.CharField(max_length=40, help_text="In the zone below, e.g. 2027-03-06T02:00.",
                            widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.CharField(max_length=40, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    zone = forms.CharField(max_length=64, help_text="Times above and the recurrence are in this zone.")
    rrule = forms.CharField(max_length=RRULE_MAX, required=False, label="Repeat (RRULE)",
                            help_text="Optional, e.g. FREQ=MONTHLY;BYDAY=1SA (first Saturday) or FREQ=WEEKLY;BYDAY=SA.")
    exdates = forms.CharField(max_length=2000, required=False, label="Leave out",
                              help_text="Occurrences to skip, by their start in the zone above, separated by "
                                        "spaces, e.g. 2027-04-03T02:00.")
    cutoff_minutes = forms.IntegerField(min_value=0, max_value=7 * 24 * 60, initial=30, label="Cutoff (minutes)",
                                        help_text="No new evacuation starts later than this before the end.")
    on_start = forms.ChoiceField(choices=OnStartChoices.choices, initial=OnStartChoices.EVACUATE, label="At the start")
    on_end = forms.ChoiceField(choices=OnEndChoices.choices, initial=OnEndChoices.RETURN, label="At the end")
    notes = forms.CharField(max_length=NOTES_MAX, required=False, widget=forms.Textarea(attrs={"rows": 3}))
    confirm_at_risk = forms.BooleanField(required=False, label="Accept it at risk (the other hosts may lack room)")

    def __init__(self, *args, hosts=None, **kwargs):
        """``hosts``: the hosts the user may choose (default: every host in service)."""
        super().__init__(*args, **kwargs)
        self.fields["zone"].initial = settings.TIME_ZONE
        if hosts is not None:
            self.fields["hosts"].queryset = hosts.order_by("name")

    def clean_zone(self):
        return clean_zone_name(self.cleaned_data["zone"])

    def clean(self):
        data = super().clean()
        zone = data.get("zone")
        if zone:
            for name in ("start", "end"):
                if data.get(name):
                    try:
                        data[f"{name}_at"] = parse_time(data[name], zone)
                    except TimeInputError as exc:
                        self.add_error(name, str(exc))
            skipped = []
            for text in (data.get("exdates") or "").replace(",", " ").split():
                try:
                    skipped.append(parse_time(text, zone).isoformat())
                except TimeInputError as exc:
                    self.add_error("exdates", str(exc))
            data["exdate_list"] = skipped
        return data

    def spec(self) -> WindowSpec:
        d = self.cleaned_data
        return WindowSpec(title=d["title"], hosts=list(d["hosts"]), start=d["start_at"], end=d["end_at"],
                          zone=d["zone"], rrule=d.get("rrule", ""), exdates=d.get("exdate_list", []),
                          cutoff_minutes=d["cutoff_minutes"],
                          on_start=d["on_start"], on_end=d["on_end"], notes=d.get("notes", ""))

    def add_problems(self, problems: dict[str, list[str]]) -> None:
        """The service's refusal, each message at its field (the others at the top)."""
        for name, messages in problems.items():
            for message in messages:
                self.add_error(name if name in self.fields else None, message)


class ZoneForm(forms.Form):
    zone = forms.CharField(max_length=64, label="Your time zone")

    def clean_zone(self):
        return clean_zone_name(self.cleaned_data["zone"])
