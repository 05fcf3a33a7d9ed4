from .choices import RoleChoices
from .roles import user_has_role


def roles(request):
    """Which role-gated controls the page may show (the views check again on use)."""
    user = getattr(request, "user", None)
    return {
        "can_view": user_has_role(user, RoleChoices.VIEWER),
        "can_operate": user_has_role(user, RoleChoices.OPERATOR),
        "can_admin": user_has_role(user, RoleChoices.ADMIN),
    }
