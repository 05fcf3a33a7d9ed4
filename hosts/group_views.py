"""Host groups (Admin): which hosts each holds and who holds which role on it."""

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.shortcuts import redirect
from django.views.generic import TemplateView

from core.actors import Actor
from core.choices import RoleChoices
from core.errors import ServiceRefused
from core.ids import IdModelChoiceField, IdModelMultipleChoiceField
from core.roles import AdminRequiredMixin

from .group_services import host_group_grant, host_group_set
from .models import Host, HostGroup


class HostGroupForm(forms.Form):
    name = forms.CharField(max_length=63)
    hosts = IdModelMultipleChoiceField(queryset=Host.objects.all(), required=False,
                                       widget=forms.CheckboxSelectMultiple)


class GrantForm(forms.Form):
    group = IdModelChoiceField(queryset=HostGroup.objects.all())
    user = IdModelChoiceField(queryset=get_user_model().objects.filter(is_active=True).order_by("username"))
    role = forms.ChoiceField(choices=[("", "No role (revoke)"), *RoleChoices.choices], required=False)


class HostGroupListView(AdminRequiredMixin, TemplateView):
    """GET: the groups. POST form=group: create / set hosts; form=grant: a user's role on a group."""

    template_name = "hosts/host_groups.html"

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs),
                "groups": HostGroup.objects.prefetch_related("hosts", "grants__user"),
                "group_form": kwargs.get("group_form") or HostGroupForm(),
                "grant_form": kwargs.get("grant_form") or GrantForm()}

    def post(self, request):
        actor = Actor.from_request(request)
        if request.POST.get("form") == "grant":
            form = GrantForm(request.POST)
            if not form.is_valid():
                return self.render_to_response(self.get_context_data(grant_form=form))
            data = form.cleaned_data
            host_group_grant(group=data["group"], user=data["user"], role=data["role"] or None, actor=actor)
            messages.success(request, f"{data['user'].username}: {data['role'] or 'no role'} on {data['group'].name}.")
            return redirect("hosts:host_groups")
        form = HostGroupForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(group_form=form))
        try:
            group = host_group_set(name=form.cleaned_data["name"], hosts=list(form.cleaned_data["hosts"]), actor=actor)
        except ServiceRefused as exc:
            form.add_error("name", f"{exc.message} {exc.hint}")
            return self.render_to_response(self.get_context_data(group_form=form))
        messages.success(request, f"Saved host group {group.name}.")
        return redirect("hosts:host_groups")
