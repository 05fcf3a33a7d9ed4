"""The fleet page: recommendations with their reasons, Apply (Operator, confirmed), and each host's load chart."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect
from django.views import View
from django.views.generic import TemplateView

from core.actors import Actor
from core.errors import ServiceRefused
from core.choices import RoleChoices
from core.roles import OperatorRequiredMixin, ViewerRequiredMixin
from hosts.permissions import HostAccessMixin, hosts_to_plan_on

from . import facts, services


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
        context["outcomes"] = services.recommendations(basis=basis, hosts=scope)
        context["hosts"] = scope.order_by("name")
        return context


class RecommendationApplyView(OperatorRequiredMixin, HostAccessMixin, View):
    """Operator on every host the recommendation moves guests from or to."""

    host_role = RoleChoices.OPERATOR

    def post(self, request):
        rec_id = (request.POST.get("rec_id") or "")[:64]
        # An id of the whole fleet's recommendations touching hosts outside the user's groups: 403.
        rec = services.recommendation_find(rec_id=rec_id, basis=_basis(request))
        if rec is not None:
            self.require_hosts(services.recommendation_hosts(rec), RoleChoices.OPERATOR)
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
