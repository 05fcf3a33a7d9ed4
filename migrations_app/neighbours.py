"""The destination's other guests around a live migration: the readings ``impact`` judges.

``read(session)`` reads every running guest's vCPU counters on the destination (one bulk
libvirt call), ``before(host)`` gives the counters its last inventory refresh kept, and
``Watch`` takes one reading when the migrate call is made and one when it returned. Reading
never fails a migration: what could not be read is said in the record instead.
"""

from __future__ import annotations

import time

from hosts.adapters import stats as stats_adapter
from hosts.adapters.errors import AdapterError
from hosts.models import Host, LoadCounters

from . import impact


def read(session) -> impact.Reading:
    """The running guests of the session's host now (raises AdapterError)."""
    found = stats_adapter.running_guests_cpu(session.libvirt)
    return impact.Reading(at_s=time.time(), guests={
        d.uuid: impact.Counters(name=d.name, vcpus=d.vcpus, vcpu_ns=d.vcpu_time_ns, delay_ns=d.vcpu_delay_ns)
        for d in found
    })


def before(host: Host) -> impact.Reading | None:
    """The counters of the host's last inventory refresh, or None when it has none."""
    kept = LoadCounters.objects.filter(host=host).values("at", "vcpu_ns", "vcpu_delay_ns").first()
    if kept is None:
        return None
    delays = kept["vcpu_delay_ns"] or {}
    return impact.Reading(at_s=kept["at"].timestamp(), guests={
        str(uuid): impact.Counters(name="", vcpus=0, vcpu_ns=int(ns), delay_ns=delays.get(uuid))
        for uuid, ns in (kept["vcpu_ns"] or {}).items()
    })


class Watch:
    """Readings of the destination around one migration; ``figures()`` for its record."""

    def __init__(self, destination: Host, session, moving: str):
        self.host, self.session, self.moving = destination, session, moving
        self.start: impact.Reading | None = None
        self.error = ""
        self.earlier = before(destination)

    def _read(self) -> impact.Reading | None:
        try:
            return read(self.session)
        except AdapterError as exc:
            self.error = self.error or exc.message
            return None

    def begin(self) -> None:
        self.start = self._read()

    def figures(self) -> dict:
        """The record's ``neighbours``: measured, or why not."""
        end = self._read() if self.start is not None else None
        if self.start is None or end is None:
            return {"measured": False, "why": f"The destination's guests could not be read: {self.error}"}
        rows = impact.neighbours(before=self.earlier, start=self.start, end=end, moving=self.moving)
        return impact.summary(rows, host=self.host.name, before_s=impact.before_window_s(self.earlier, self.start),
                              during_s=end.at_s - self.start.at_s)
