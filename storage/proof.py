"""The proof that a share works, as steps (pure) and as a grid (pure): one row per host.

After setup (and whenever an admin asks), every host — the server in its export directory,
each client at the mount path — writes a marker file as QEMU's user, then every host reads every
other host's marker, as QEMU's user too. So one run shows, per host: the share is mounted (the
server: exported), the same file is seen from the server and every client, QEMU's user can read
and write there, and (clients) the libvirt pool is active. The markers are removed at the end.

On clients the commands run as QEMU's user by name (``runuser -u USER``, with its groups); on
the server as the clients' QEMU uid:gid by number (``setpriv``), since NFS checks numbers and
the server may not have that user at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .nfs_checks import ganesha_serving_probes, nfs_source
from .steps import MATCH_EQUALS, MATCH_EXIT_NONZERO, MATCH_LINE_FIELD, MATCH_SHARED_MOUNT, POOL_ACTIVE, POOL_DEFINED_AT, Command, Probe, Step

if TYPE_CHECKING:
    from .facts import HostFacts
    from .validation import ShareRequest

MARKER_PREFIX = ".vmportal-proof-"
SUFFIXES = ("proof-mounted", "proof-write", "proof-read", "proof-pool", "proof-cleanup")


@dataclass(frozen=True)
class Participant:
    name: str
    role: str  # "server" | "client"
    directory: str  # where this host sees the share
    run_as: tuple[str, ...]  # argv prefix running a command as QEMU's user

    def marker(self, of: str, token: str) -> str:
        return f"{self.directory}/{MARKER_PREFIX}{token}-{of}"


def participants(request: ShareRequest, facts: dict[str, HostFacts], *, uid_gid: tuple[int, int]) -> list[Participant]:
    uid, gid = uid_gid
    server = Participant(
        name=request.server.name,
        role="server",
        directory=request.export_path,
        run_as=("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"),
    )
    clients = [
        Participant(name=c.name, role="client", directory=request.mount_path, run_as=("runuser", "-u", facts[c.name].qemu_user, "--"))
        for c in request.clients
    ]
    return [server, *clients]


def marker_content(token: str, host: str) -> str:
    return f"{token} {host}"


def proof_steps(
    request: ShareRequest, facts: dict[str, HostFacts], *, token: str, uid_gid: tuple[int, int], pool_name: str, server_impl: str
) -> list[Step]:
    """The proof as steps: mounted?, write, read the others, pool?, clean up (in that order)."""
    hosts = participants(request, facts, uid_gid=uid_gid)
    source = nfs_source(request.server.address, request.export_path)
    steps: list[Step] = []
    for p in hosts:
        if p.role == "server":
            # Ganesha answers showmount only to allowed clients (not to the server itself): ask
            # whether it runs with the current config; the kernel server lists its exports.
            if server_impl == "ganesha":
                checks = ganesha_serving_probes(wait_s=15)
            else:
                checks = (Probe(argv=("exportfs", "-s"), match=MATCH_LINE_FIELD, value=request.export_path),)
            title, why = "The export is served", "The NFS server runs with the export loaded."
        else:
            checks = (Probe(argv=("findmnt", "-n", "-o", "FSTYPE,SOURCE", "--mountpoint", p.directory), match=MATCH_SHARED_MOUNT, value=source),)
            title, why = "The share is mounted", f"findmnt shows the share at {p.directory}."
        steps.append(Step(key=f"{p.name}:proof-mounted", host=p.name, title=title, why=why, check=checks, actions=(), verify=(), hint="Run the setup again; it mounts what is missing."))
    for p in hosts:
        marker = p.marker(p.name, token)
        steps.append(
            Step(
                key=f"{p.name}:proof-write", host=p.name, title="QEMU's user writes a marker",
                why=f"Written and read back as QEMU's user in {p.directory}.",
                check=(),
                actions=(Command(argv=(*p.run_as, "tee", marker), stdin=marker_content(token, p.name) + "\n"),),
                verify=(Probe(argv=(*p.run_as, "cat", marker), match=MATCH_EQUALS, value=marker_content(token, p.name)),),
                hint=f"QEMU's user cannot write in {p.directory}: check the export directory's owner and mode on the server, and the export's squash option.",
            )
        )
    for p in hosts:
        others = [q for q in hosts if q.name != p.name]
        steps.append(
            Step(
                key=f"{p.name}:proof-read", host=p.name, title="It sees the other hosts' markers",
                why="The same file is seen from the server and every client.",
                check=tuple(
                    Probe(argv=(*p.run_as, "cat", p.marker(q.name, token)), match=MATCH_EQUALS, value=marker_content(token, q.name), wait_s=5)
                    for q in others
                ),
                actions=(), verify=(),
                hint="A host that does not see the others' markers has something else at that path (a local directory, another export).",
            )
        )
    for p in hosts:
        if p.role != "client":
            continue
        steps.append(
            Step(
                key=f"{p.name}:proof-pool", host=p.name, title="The libvirt pool is active",
                why=f"Pool {pool_name} over {p.directory}.",
                check=(Probe(pool=pool_name, pool_fact=POOL_DEFINED_AT, value=p.directory), Probe(pool=pool_name, pool_fact=POOL_ACTIVE)),
                actions=(), verify=(),
                hint="Run the setup again; it defines and starts what is missing.",
            )
        )
    for p in hosts:
        marker = p.marker(p.name, token)
        steps.append(
            Step(
                key=f"{p.name}:proof-cleanup", host=p.name, title="Remove the marker",
                why="Leave nothing behind.",
                check=(),
                actions=(Command(argv=(*p.run_as, "rm", "-f", marker)),),
                verify=(Probe(argv=("test", "-e", marker), match=MATCH_EXIT_NONZERO),),
                hint=f"Remove {marker} by hand.",
            )
        )
    return steps


def grid(host_names: list[str], outcomes: dict[str, dict]) -> list[dict]:
    """One row per host from the proof steps' outcomes ({key: {"state": …, "failed": [...]}}).

    Each cell is True (proven), False (checked and wrong) or None (not applicable / not run).
    """
    from .choices import StepStateChoices

    def ok(key: str) -> bool | None:
        outcome = outcomes.get(key)
        if outcome is None:
            return None
        return outcome.get("state") in (StepStateChoices.CHANGED, StepStateChoices.ALREADY_DONE)

    rows = []
    for name in host_names:
        read = outcomes.get(f"{name}:proof-read")
        cells = {
            "mounted": ok(f"{name}:proof-mounted"),
            "same_file": ok(f"{name}:proof-read"),
            "qemu_rw": ok(f"{name}:proof-write"),
            "pool": ok(f"{name}:proof-pool"),
        }
        # The server has no pool of its own (its guests would need a mount of their own).
        required = [v for k, v in cells.items() if k != "pool" or f"{name}:proof-pool" in outcomes]
        problems = []
        for key in (f"{name}:{suffix}" for suffix in SUFFIXES):
            outcome = outcomes.get(key) or {}
            problems.extend(outcome.get("failed", []))
            if outcome.get("error"):
                problems.append(outcome["error"])
        rows.append(
            {
                "host": name,
                **cells,
                "unseen": (read or {}).get("failed", []),
                "problems": problems,
                "ok": all(v is True for v in required),
            }
        )
    return rows
