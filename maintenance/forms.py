"""The admin's choices on the evacuation plan and the exit page, bounded to the host's own guests
and to hosts that may take them."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from hosts.models import Host, VirtualMachine

from .choices import StrategyChoices
from .models import MAX_CONCURRENCY

OVERRIDE_PREFIX = "to_"
KEEP_PREFIX = "keep_"  # the destinations of the plan shown, carried by Confirm


def candidate_hosts(host: Host, hosts=None) -> list[Host]:
    """Hosts a guest of ``host`` may be sent to by an override: reachable and not in maintenance
    (of ``hosts``, the ones the user may act on, when given)."""
    hosts = Host.objects.all() if hosts is None else hosts
    return [h for h in hosts.exclude(pk=host.pk).order_by("name") if h.is_connectable and not h.in_maintenance]


class PlanChoicesForm(forms.Form):
    """Recalculate (GET) and Confirm (POST) carry the same choices; overrides are ``to_<uuid>=host``."""

    concurrency = forms.IntegerField(
        min_value=1, max_value=MAX_CONCURRENCY, initial=2, label="Guests at a time",
        help_text=f"Migrations out of the host at once (1–{MAX_CONCURRENCY}).",
    )
    strategy = forms.ChoiceField(choices=StrategyChoices.choices, initial=StrategyChoices.SPREAD, label="Placement")
    copy_storage = forms.BooleanField(
        required=False, label="Copy local disks",
        help_text="Running guests with local disks are moved with their disks copied (slower).",
    )
    exclude = forms.MultipleChoiceField(required=False, label="Leave out")
    shutdown = forms.MultipleChoiceField(required=False, label="Shut down and start again after maintenance")

    def __init__(self, *args, host: Host, candidates=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.host = host
        self.candidate_scope = candidates  # the hosts the plan may send guests to (None: all)
        self.guests = list(VirtualMachine.objects.filter(host=host).order_by("name"))
        guest_choices = [(str(vm.uuid), vm.name) for vm in self.guests]
        self.fields["exclude"].choices = guest_choices
        self.fields["shutdown"].choices = guest_choices
        self.candidates = [h.name for h in candidate_hosts(host, candidates)]
        for vm in self.guests:
            self.fields[OVERRIDE_PREFIX + str(vm.uuid)] = forms.ChoiceField(
                required=False, label=f"Destination of {vm.name}",
                choices=[("", "Automatic")] + [(name, name) for name in self.candidates],
                # The select sits in the plan's table row; it belongs to the Recalculate form.
                widget=forms.Select(attrs={"form": "plan-form"}),
            )

    def override_field(self, uuid: str):
        return self[OVERRIDE_PREFIX + uuid]

    def clean(self):
        data = super().clean()
        both = set(data.get("exclude") or ()) & set(data.get("shutdown") or ())
        if both:
            names = ", ".join(vm.name for vm in self.guests if str(vm.uuid) in both)
            raise ValidationError(f"A guest is either left out or shut down, not both: {names}.")
        return data

    def choices(self) -> dict:
        """The validated choices as ``planning.evacuation_plan`` and ``services.evacuation_enter`` take them."""
        data = self.cleaned_data
        overrides = {}
        for vm in self.guests:
            uuid = str(vm.uuid)
            wanted = data.get(OVERRIDE_PREFIX + uuid)
            if wanted and uuid not in data["exclude"] and uuid not in data["shutdown"]:
                overrides[uuid] = wanted
        return {
            "concurrency": data["concurrency"], "strategy": data["strategy"], "copy_storage": data["copy_storage"],
            "excluded": list(data["exclude"]), "shutdown": list(data["shutdown"]), "overrides": overrides,
        }

    def query(self) -> list[tuple[str, str]]:
        """The validated choices as hidden fields of the Confirm form (the plan shown is the plan confirmed)."""
        c = self.choices()
        pairs = [("concurrency", str(c["concurrency"])), ("strategy", c["strategy"])]
        if c["copy_storage"]:
            pairs.append(("copy_storage", "on"))
        pairs += [("exclude", u) for u in c["excluded"]] + [("shutdown", u) for u in c["shutdown"]]
        pairs += [(OVERRIDE_PREFIX + u, h) for u, h in c["overrides"].items()]
        return pairs

    def error_lines(self) -> list[str]:
        lines = []
        for name, errors in self.errors.items():
            label = self.fields[name].label if name in self.fields else ""
            for e in errors:
                lines.append(f"{label}: {e}" if label else str(e))
        return lines


class ConfirmPlanForm(PlanChoicesForm):
    fingerprint = forms.RegexField(regex=r"^[0-9a-f]{16}$", error_messages={"invalid": "The plan's fingerprint is malformed."})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for vm in self.guests:
            self.fields[KEEP_PREFIX + str(vm.uuid)] = forms.ChoiceField(
                required=False, choices=[("", "")] + [(name, name) for name in self.candidates],
                widget=forms.HiddenInput,
            )

    def keep(self) -> dict[str, str]:
        """Where the plan shown sent each guest (bounded to candidates; the fingerprint proves the rest)."""
        return {str(vm.uuid): self.cleaned_data[KEEP_PREFIX + str(vm.uuid)] for vm in self.guests
                if self.cleaned_data.get(KEEP_PREFIX + str(vm.uuid))}


def keep_fields(plan) -> list[tuple[str, str]]:
    """Hidden fields that carry the plan's destinations to Confirm."""
    return [(KEEP_PREFIX + r.uuid, r.destination) for r in plan.rows if r.destination and not r.overridden]


class ExitForm(forms.Form):
    bring_back = forms.TypedChoiceField(
        choices=(("yes", "Bring guests home"), ("no", "Leave them where they are")),
        coerce=lambda v: v == "yes", label="Bring the guests home (yes or no)",
    )
    concurrency = forms.IntegerField(min_value=1, max_value=MAX_CONCURRENCY, initial=2, required=False,
                                     label="Guests at a time")
