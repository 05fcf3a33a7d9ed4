"""Host maintenance pages. Views only read, validate and call services; no host I/O here."""

from django.views.generic import DetailView

from core.roles import ViewerRequiredMixin

from .models import Evacuation
from .payloads import evacuation_payload


class EvacuationDetailView(ViewerRequiredMixin, DetailView):
    model = Evacuation
    template_name = "maintenance/evacuation_detail.html"
    context_object_name = "evacuation"

    def get_queryset(self):
        return Evacuation.objects.select_related("host")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["state"] = evacuation_payload(self.object)
        return context
