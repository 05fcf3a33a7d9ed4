"""Forms of the People pages."""

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.validators import UnicodeUsernameValidator

from .choices import RoleChoices

ROLE_FIELD_CHOICES = [("", "No role (cannot see anything)"), *RoleChoices.choices]


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()],
                               help_text="Letters, digits and @ . + - _ only.")
    email = forms.EmailField(required=False, max_length=254)
    role = forms.ChoiceField(choices=ROLE_FIELD_CHOICES, required=False, initial=RoleChoices.VIEWER)
    password = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to make a one-time invitation link instead (the person chooses their password).",
    )

    def clean_username(self):
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(f"A user named {username!r} already exists.")
        return username


class UserRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_FIELD_CHOICES, required=False)


class InvitationAcceptForm(SetPasswordForm):
    """Django's own new-password form (its validators), for the person behind a one-time link."""
