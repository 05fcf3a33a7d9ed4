"""The fleet page: recommendations with their reasons, Apply (Operator, confirmed), and each host's load chart."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect
from django.views import View
from django.views.generic import TemplateView

from core.actors import Actor
from core.errors import ServiceRefused
from core.roles import OperatorRequiredMixin, ViewerRequiredMixin
from hosts.models import Host

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
        context["outcomes"] = services.recommendations(basis=basis)
        context["hosts"] = Host.objects.order_by("name")
        return context


class RecommendationApplyView(OperatorRequiredMixin, View):
    def post(self, request):
        rec_id = (request.POST.get("rec_id") or "")[:64]
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
