"""RQ job functions of the inventory: ids in, runner called, nothing else."""

from core.actors import Actor
from core.jobs import jobs_abort_stale, run_job

from . import inventory, leases, services
from .models import Host


def fetch_host_key_job(job_id: int, host_id: int) -> None:
    run_job(job_id, lambda ctx: inventory.fetch_host_key(host_id=host_id, ctx=ctx))


def refresh_host_job(job_id: int, host_id: int, full: bool = True) -> None:
    run_job(job_id, lambda ctx: inventory.refresh_host(host_id=host_id, full=full, ctx=ctx))


def host_change_read_key_job(job_id: int, change_id: int) -> None:
    run_job(job_id, lambda ctx: inventory.change_read_key(change_id=change_id, ctx=ctx))


def host_change_check_job(job_id: int, change_id: int) -> None:
    run_job(job_id, lambda ctx: inventory.change_check(change_id=change_id, ctx=ctx))


def vm_action_job(job_id: int, vm_id: int, action: str) -> None:
    job = run_job(job_id, lambda ctx: inventory.run_vm_action(vm_id=vm_id, action=action, ctx=ctx))
    # However it ended, the guest is free again. (A job already run elsewhere is left alone;
    # one whose worker died is reclaimed by the sweep once its row says so.)
    if job.is_terminal:
        leases.lease_release(owner=job)


def inventory_refresh_all() -> int:
    """Periodic (called by the watch_hosts loop): queue a refresh of every host it may contact.

    Only dispatches: each host's refresh is its own Job with its own row. Also closes jobs
    whose worker died, and frees the guests their leases held. Returns the number of hosts queued.
    """
    jobs_abort_stale()
    leases.leases_reclaim()
    queued = 0
    for host in Host.objects.all():
        if services.host_refresh_request(host=host, actor=Actor.system(), full=False) is not None:
            queued += 1
    return queued
