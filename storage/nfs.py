"""Talking to hosts for NFS shares: the work the jobs run (read → plan, apply, prove).

- ``plan_setup``: read every host of the share (read-only commands), build the plan with
  ``storage.plan.build_plan`` and store it on the setup: that is the dry run the admin sees.
- ``apply_setup``: run exactly the stored plan (``storage.runner``), recording each step's
  outcome as it ends, then the proof; a failing step stops the run with its output and fix.
- ``verify_share``: the proof alone, with a new token.

One SSH session per host for the whole job, and a libvirt connection only where a step needs
one (both through the hosts app's adapters, with the host's pinned key).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from core.actors import Actor
from core.errors import PortalError
from core.jobs import JobContext
from hosts.adapters import libvirt as libvirt_adapter
from hosts.adapters import ssh as ssh_adapter
from hosts.adapters.errors import AdapterError
from hosts.inventory import ssh_target_for
from hosts.models import Host

from . import libvirt_pool, proof, services
from .choices import SetupStatusChoices, StepStateChoices
from .facts import EXPORTS, FSTAB, GANESHA_CONF, PoolFacts, facts_from_json, facts_to_json, gather_host_facts
from .models import Share, ShareSetup
from .plan import build_plan
from .runner import StepFailed, run_proof, run_steps
from .steps import plan_from_json, plan_to_json

logger = logging.getLogger(__name__)


class ProofFailed(PortalError):
    """The setup or check ran, but some host does not see the share as it should."""

    default_hint = "Open the share: the grid says which host does not see the share, and why."


class HostChannel:
    """One host for the length of a job: its SSH session, and a libvirt connection on demand."""

    def __init__(self, host: Host):
        self.host = host
        self._stack = contextlib.ExitStack()
        self._target = None
        self._session = None
        self._conn = None

    def __enter__(self) -> HostChannel:
        self._target = ssh_target_for(self.host)
        self._session = self._stack.enter_context(ssh_adapter.SSHSession(self._target))
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 30.0, check: bool = False):
        return self._session.run(argv, stdin=stdin, timeout=timeout, check=check)

    def libvirt(self):
        if self._conn is None:
            self._conn = self._stack.enter_context(
                libvirt_adapter.open_connection(self.host.effective_libvirt_uri, ssh_target=self._target)
            )
        return self._conn


@contextlib.contextmanager
def open_channels(hosts: list[Host], ctx: JobContext) -> Iterator[dict[str, HostChannel]]:
    with contextlib.ExitStack() as stack:
        channels = {}
        for host in hosts:
            ctx.log(f"Connecting to {host.name} ({host.ssh_user}@{host.address}:{host.ssh_port})")
            channels[host.name] = stack.enter_context(HostChannel(host))
        yield channels


def _hosts_of(share: Share) -> list[Host]:
    return [share.server, *share.clients.order_by("name")]


def plan_setup(*, setup_id: int, ctx: JobContext) -> dict:
    """Read the share's hosts and store the plan (the dry run). Changes nothing on any host."""
    setup = ShareSetup.objects.select_related("share__server").get(pk=setup_id)
    share = setup.share
    try:
        request = services.share_request(share)
        hosts = _hosts_of(share)
        facts = {}
        with open_channels(hosts, ctx) as channels:
            for host in hosts:
                channel = channels[host.name]
                is_server = host.pk == share.server_id
                facts[host.name] = gather_host_facts(
                    channel.run,
                    name=host.name,
                    address=host.address,
                    ssh_user=host.ssh_user,
                    paths=[share.export_path] if is_server else [share.mount_path],
                    files=[GANESHA_CONF, EXPORTS] if is_server else [FSTAB],
                    pools=None if is_server else (lambda c=channel: [PoolFacts(**p.__dict__) for p in libvirt_pool.list_pools(c.libvirt())]),
                    log=ctx.log,
                )
                ctx.progress(int(80 * len(facts) / len(hosts)))
    except AdapterError as exc:
        services.setup_detect_failed(setup=setup, error=exc.message, hint=exc.hint)
        raise
    except Exception as exc:  # a validation error after an inventory change, a bug: the setup must not stay "reading"
        services.setup_detect_failed(setup=setup, error=f"{type(exc).__name__}: {exc}", hint="")
        raise
    plan = build_plan(request, facts, stamp=setup.stamp, token=setup.token)
    services.setup_planned(setup=setup, facts={n: facts_to_json(f) for n, f in facts.items()}, plan=plan_to_json(plan))
    for blocker in plan.blockers:
        ctx.log(f"Blocked: {blocker}")
    ctx.log(f"Plan: {len(plan.steps)} step(s) on {len(hosts)} host(s), {len(plan.blockers)} blocker(s)")
    return {"steps": len(plan.steps), "blockers": len(plan.blockers), "server_impl": plan.summary.get("server_impl")}


def apply_setup(*, setup_id: int, ctx: JobContext) -> dict:
    """Run the stored plan, then the proof. Raises at the first failing step (resume re-plans)."""
    setup = ShareSetup.objects.select_related("share__server").get(pk=setup_id)
    share = setup.share
    plan = plan_from_json(setup.plan)
    total = len(plan.steps) + len(plan.proof)
    done = [0]

    def on_outcome(outcome) -> None:
        services.setup_step_recorded(setup=setup, outcome=outcome.to_json())
        done[0] += 1
        ctx.progress(int(100 * done[0] / max(total, 1)))

    try:
        with open_channels(_hosts_of(share), ctx) as channels:
            outcomes = run_steps(plan.steps, channels, log=ctx.log, on_outcome=on_outcome)
            ctx.log("Proof: a marker from every host, read by every other host, as QEMU's user")
            proof_outcomes = run_proof(plan.proof, channels, log=ctx.log)
    except StepFailed as exc:
        services.setup_finished(setup=setup, ok=False, actor=Actor.system(), failed_step=exc.outcome.key, error=exc.message, hint=exc.hint)
        raise
    except AdapterError as exc:
        services.setup_finished(setup=setup, ok=False, actor=Actor.system(), failed_step="connect", error=exc.message, hint=exc.hint)
        raise
    rows = proof.grid(plan.hosts(), proof_outcomes)
    services.setup_finished(setup=setup, ok=True, actor=Actor.system(), proof=proof_outcomes, grid=rows)
    changed = sum(1 for o in outcomes if o.state == StepStateChoices.CHANGED)
    bad = [row["host"] for row in rows if not row["ok"]]
    if bad:
        raise ProofFailed(f"The setup ran, but the proof failed on {', '.join(bad)}.")
    ctx.log(f"Done: {changed} step(s) changed something, {len(outcomes) - changed} were already done; proof green on {len(rows)} host(s)")
    return {"changed": changed, "already_done": len(outcomes) - changed, "hosts": len(rows)}


def verify_share(*, share_id: int, ctx: JobContext) -> dict:
    """The proof alone (new markers), from the facts of the share's last successful setup."""
    share = Share.objects.select_related("server").get(pk=share_id)
    setup = share.setups.filter(status=SetupStatusChoices.SUCCEEDED).order_by("-created", "-pk").first()
    request = services.share_request(share)
    facts = {name: facts_from_json(data) for name, data in setup.facts.items()}
    owner = plan_from_json(setup.plan).summary.get("owner", "0:0")
    uid, gid = (int(x) for x in owner.split(":"))
    summary = plan_from_json(setup.plan).summary
    steps = proof.proof_steps(
        request, facts, token=services.new_token(), uid_gid=(uid, gid), pool_name=summary["pool_name"],
        server_impl=summary["server_impl"],
    )
    with open_channels(_hosts_of(share), ctx) as channels:
        outcomes = run_proof(steps, channels, log=ctx.log)
    hosts = [share.server.name, *(c.name for c in share.clients.order_by("name"))]
    rows = proof.grid(hosts, outcomes)
    services.share_verified(share=share, grid=rows, job=ctx.job, actor=Actor.system())
    bad = [row["host"] for row in rows if not row["ok"]]
    if bad:
        raise ProofFailed(f"The proof failed on {', '.join(bad)}.")
    return {"hosts": len(rows), "ok": True}
