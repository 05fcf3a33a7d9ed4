"""People pages (Admin): the list, add / invite, a person's page (role, deactivate, reset), and
the one-time link a person opens to set their password. Views validate and call core.people."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import FormView, TemplateView

from . import people
from .actors import Actor
from .choices import ROLE_ORDER
from .errors import ServiceRefused
from .forms import InvitationAcceptForm, UserCreateForm, UserRoleForm
from .models import AuditEvent, UserInvitation
from .roles import AdminRequiredMixin

MAX_TOKEN_CHARS = 100


def role_of(user) -> str:
    names = {group.name for group in user.groups.all()}
    held = [role.value for role in ROLE_ORDER if role.value in names]
    return held[-1] if held else ""


def _link(request, token: str) -> str:
    return request.build_absolute_uri(reverse("core:invitation_accept", kwargs={"token": token}))


PEOPLE_PER_PAGE = 50


class PeopleListView(AdminRequiredMixin, TemplateView):
    template_name = "core/people_list.html"

    def get_context_data(self, **kwargs):
        users = get_user_model().objects.order_by("username", "pk").prefetch_related(
            "groups", Prefetch("invitations", queryset=UserInvitation.objects.filter(used_at__isnull=True)))
        page = Paginator(users, PEOPLE_PER_PAGE).get_page(self.request.GET.get("page"))
        return {**super().get_context_data(**kwargs), "page": page,
                "rows": [{"user": u, "role": role_of(u) or ("Admin (superuser)" if u.is_superuser else ""),
                          "pending": next(iter(u.invitations.all()), None)} for u in page.object_list]}


class UserCreateView(AdminRequiredMixin, FormView):
    template_name = "core/people_form.html"
    form_class = UserCreateForm

    def form_valid(self, form):
        data = form.cleaned_data
        try:
            user, token = people.user_create(
                username=data["username"], email=data["email"], role=data["role"] or None,
                password=data["password"] or None, actor=Actor.from_request(self.request),
            )
        except ServiceRefused as exc:
            form.add_error(None, f"{exc.message} {exc.hint}")
            return self.form_invalid(form)
        except ValidationError as exc:
            form.add_error("password", exc)
            return self.form_invalid(form)
        if token:
            return render(self.request, "core/people_link.html",
                          {"person": user, "link": _link(self.request, token), "kind": "invitation",
                           "hours": people.INVITATION_HOURS})
        messages.success(self.request, f"Added {user.username}.")
        return redirect("core:person", pk=user.pk)


class PersonView(AdminRequiredMixin, TemplateView):
    """A person's page; POST action=role|deactivate|activate|reset."""

    template_name = "core/person.html"

    def get_person(self):
        return get_object_or_404(get_user_model(), pk=self.kwargs["pk"])

    def get_context_data(self, **kwargs):
        person = self.get_person()
        return {**super().get_context_data(**kwargs), "person": person, "role": role_of(person),
                "form": UserRoleForm(initial={"role": role_of(person)}),
                "invitations": person.invitations.all()[:5],
                "events": AuditEvent.objects.filter(target_type="user", target_id=str(person.pk))
                .order_by("-pk")[:10]}

    def post(self, request, *args, **kwargs):
        person = self.get_person()
        actor = Actor.from_request(request)
        action = request.POST.get("action")
        try:
            if action == "role":
                form = UserRoleForm(request.POST)
                if not form.is_valid():
                    messages.error(request, "Choose one of the roles listed.")
                    return redirect("core:person", pk=person.pk)
                people.user_role_set(user=person, role=form.cleaned_data["role"] or None, actor=actor)
                messages.success(request, f"Role of {person.username} saved.")
            elif action in ("deactivate", "activate"):
                people.user_active_set(user=person, active=action == "activate", actor=actor)
                messages.success(request, f"{person.username} is {'active' if action == 'activate' else 'deactivated'}.")
            elif action == "reset":
                token = people.user_password_reset(user=person, actor=actor)
                return render(request, "core/people_link.html",
                              {"person": person, "link": _link(request, token), "kind": "password reset link",
                               "hours": people.INVITATION_HOURS})
            else:
                messages.error(request, "Unknown action.")
        except ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
        return redirect("core:person", pk=person.pk)


class InvitationAcceptView(View):
    """The one-time link: anyone holding it may set that person's password, once, before it expires."""

    template_name = "core/invitation_accept.html"

    def _invitation(self, token: str) -> UserInvitation:
        invitation = people.invitation_for(token) if len(token) <= MAX_TOKEN_CHARS else None
        if invitation is None:
            raise Http404("This link has expired or was used already. Ask an admin for a new one.")
        return invitation

    def get(self, request, token):
        invitation = self._invitation(token)
        return render(request, self.template_name,
                      {"invitation": invitation, "form": InvitationAcceptForm(invitation.user)})

    def post(self, request, token):
        invitation = self._invitation(token)
        form = InvitationAcceptForm(invitation.user, request.POST)
        if not form.is_valid():
            return render(request, self.template_name, {"invitation": invitation, "form": form})
        try:
            people.invitation_accept(token=token, password=form.cleaned_data["new_password1"],
                                     actor=Actor.from_request(request))
        except ServiceRefused as exc:
            raise Http404(exc.message) from None
        messages.success(request, "Password set. Log in with it now.")
        return redirect("core:login")


