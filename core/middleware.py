"""Request ids for the audit trail, refused requests audited, and a strict Content-Security-Policy."""

import uuid

from .actors import Actor, reset_current_request, set_current_request
from .audit import audit_record_now
from .choices import AuditResultChoices

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# Everything is served by the portal itself; nothing loads from elsewhere, no inline script.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = uuid.uuid4().hex
        # Audit written from Django's signals (user and group changes) learns who acts from this.
        token = set_current_request(request)
        try:
            response = self.get_response(request)
        finally:
            reset_current_request(token)
        response["X-Request-ID"] = request.request_id
        return response


class AuditRefusedMiddleware:
    """A 403 answer to a request that would change something (POST, PUT, DELETE…) is audited:
    a missing role, a failed CSRF check, an admin action refused."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code == 403 and request.method not in SAFE_METHODS:
            audit_record_now(
                actor=Actor.from_request(request), action="request.refused", result=AuditResultChoices.REFUSED,
                parameters={"method": request.method, "path": request.path[:500]},
                message=f"{request.method} {request.path[:200]} refused (403).",
            )
        return response


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # Django's admin uses inline styles and scripts; leave its pages to its own defaults.
        if not request.path.startswith("/admin/"):
            response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
