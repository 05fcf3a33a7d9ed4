"""The fleet page: recommendations with their reasons, Apply or Dismiss (Operator), each host's load chart,
and the portal's balancing settings (Admin)."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect
from django.urls import reverse
from django.views import View
from django.views.generic import FormView, TemplateView

from core.actors import Actor
from core.errors import ServiceRefused
from core.choices import RoleChoices
from core.roles import AdminRequiredMixin, OperatorRequiredMixin, ViewerRequiredMixin
from hosts.permissions import HostAccessMixin, hosts_to_plan_on

from . import facts, services
from .forms import DismissForm, FleetSettingsForm
from .models import FleetSettings


def _basis(request) -> str:
    basis = request.GET.get("basis") or request.POST.get("basis") or "assigned"
    return basis if basis in facts.BASES else "assigned"


class FleetView(ViewerRequiredMixin, TemplateView):
    template_name = "fleet/fleet.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        basis = _basis(self.request)
        context["basis"] = basis
        context["bases"] = facts.BASES
        scope = hosts_to_plan_on(self.request.user)
        metric = facts.metric_now()
        context["settings"] = FleetSettings.current()
        context["outcomes"] = services.recommendations(basis=basis, metric=metric, hosts=scope)
        context["dismissals"] = services.active_dismissals(metric=metric, basis=basis)
        context["dismiss_hours"] = DismissForm.base_fields["hours"].initial
        context["hosts"] = scope.order_by("name")
        return context


class RecommendationAccessMixin(HostAccessMixin):
    """Operator on every host the recommendation moves guests from or to."""

    host_role = RoleChoices.OPERATOR

    def require_recommendation_hosts(self, rec_id: str) -> None:
        # An id of the whole fleet's recommendations touching hosts outside the user's groups: 403.
        rec = services.recommendation_find(rec_id=rec_id, basis=_basis(self.request))
        if rec is not None:
            self.require_hosts(services.recommendation_hosts(rec), RoleChoices.OPERATOR)


class RecommendationApplyView(OperatorRequiredMixin, RecommendationAccessMixin, View):
    def post(self, request):
        rec_id = (request.POST.get("rec_id") or "")[:64]
        self.require_recommendation_hosts(rec_id)
        if request.POST.get("confirm") != "yes":
            messages.error(request, "Tick “I have read the moves” to apply the recommendation.")
            return redirect("fleet:fleet")
        try:
            ev = services.recommendation_apply(rec_id=rec_id, actor=Actor.from_request(request), basis=_basis(request))
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
            return redirect("fleet:fleet")
        messages.success(request, f"Applying: {ev}.")
        return redirect(ev.get_absolute_url())


class RecommendationDismissView(OperatorRequiredMixin, RecommendationAccessMixin, View):
    def post(self, request):
        self.require_recommendation_hosts((request.POST.get("rec_id") or "")[:64])
        form = DismissForm(request.POST)
        if not form.is_valid():
            messages.error(request, " ".join(f"{f}: {' '.join(e)}" for f, e in form.errors.items()))
            return redirect("fleet:fleet")
        data = form.cleaned_data
        try:
            d = services.recommendation_dismiss(rec_id=data["rec_id"], reason=data["reason"], hours=data["hours"],
                                                actor=Actor.from_request(request), basis=_basis(request))
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
            return redirect("fleet:fleet")
        messages.success(request, f"Dismissed {d.rec_id} until {d.expires:%Y-%m-%d %H:%M} UTC, or until the facts change.")
        return redirect(f"{reverse('fleet:fleet')}?basis={d.basis}")


class FleetSettingsView(AdminRequiredMixin, FormView):
    template_name = "fleet/fleet_settings.html"
    form_class = FleetSettingsForm

    def get_initial(self):
        return FleetSettingsForm.initial_from(FleetSettings.current())

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "current": FleetSettings.current()}

    def form_valid(self, form):
        try:
            services.fleet_settings_update(**form.cleaned_data, actor=Actor.from_request(self.request))
        except ServiceRefused as refused:
            form.add_error(None, f"{refused.message} {refused.hint}")
            return self.form_invalid(form)
        messages.success(self.request, "Saved the fleet's balancing settings.")
        return redirect("fleet:fleet")
