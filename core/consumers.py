"""Websocket consumers for job pages and the audit page.

Each consumer checks the user's role on connect (closing with 4401/4403 otherwise), joins
one group and sends the current state first, so a page that reconnects catches up.
"""

from asgiref.sync import async_to_sync
from autobahn.exception import Disconnected
from channels.generic.websocket import JsonWebsocketConsumer

from .broadcast import AUDIT_GROUP, WARNINGS_GROUP, job_group, job_state_payload
from .choices import RoleChoices
from .models import AuditEvent, Job
from .roles import user_has_role

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class RoleGatedConsumer(JsonWebsocketConsumer):
    required_role = RoleChoices.VIEWER
    group = ""

    def get_group(self) -> str | None:
        """Group to join, or None if the target does not exist."""
        return self.group

    def current_state(self) -> dict:
        raise NotImplementedError

    def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not user_has_role(user, self.required_role):
            self.close(code=CLOSE_FORBIDDEN)
            return
        group = self.get_group()
        if group is None:
            self.close(code=CLOSE_NOT_FOUND)
            return
        self.joined_group = group
        async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
        self.accept()
        self.send_json(self.current_state())

    def disconnect(self, code):
        group = getattr(self, "joined_group", None)
        if group:
            async_to_sync(self.channel_layer.group_discard)(group, self.channel_name)

    def receive_json(self, content, **kwargs):
        # Pages only listen; anything they send is ignored.
        return

    def send_json(self, content, close=False):
        # A live event can reach a page that closed an instant earlier (its disconnect is still
        # queued behind this event): there is nobody left to tell, which is not an error.
        try:
            super().send_json(content, close=close)
        except Disconnected:
            pass


class JobConsumer(RoleGatedConsumer):
    def get_group(self):
        self.job_id = self.scope["url_route"]["kwargs"]["job_id"]
        if not Job.objects.filter(pk=self.job_id).exists():
            return None
        return job_group(self.job_id)

    def current_state(self):
        job = Job.objects.get(pk=self.job_id)
        return {"type": "job.state", "job": job_state_payload(job), "log": job.log}

    def job_status(self, event):
        self.send_json({"type": "job.status", "job": event["job"]})

    def job_log(self, event):
        self.send_json({"type": "job.log", "entry": event["entry"]})


class AuditConsumer(RoleGatedConsumer):
    group = AUDIT_GROUP

    def current_state(self):
        latest = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
        return {"type": "audit.state", "latest_id": latest}

    def audit_recorded(self, event):
        self.send_json({"type": "audit.recorded", "event_id": event["event_id"]})


class WarningConsumer(RoleGatedConsumer):
    """Every page's banner of live warnings (an overrunning maintenance window, …)."""

    group = WARNINGS_GROUP

    def current_state(self):
        return {"type": "warnings.state"}

    def warning_announced(self, event):
        self.send_json({"type": "warning.announced", "warning": event["warning"]})
