"""The virsh command an admin would type for the same migration (shown on the confirm step)."""

from __future__ import annotations

import shlex

from .options import MigrationOptions, TimeoutAction


def virsh_migrate_command(options: MigrationOptions, *, guest: str, source_uri: str, dest_uri: str) -> str:
    """``virsh -c SRC migrate --live --p2p … GUEST DEST`` for these options (max downtime aside).

    Maximum downtime is set during the job (``virsh migrate-setmaxdowntime``); a completion
    timeout maps to virsh only for force-complete with post-copy (``--timeout-postcopy``):
    its abort and its stepwise downtime have no virsh flag, the portal does them itself.
    """
    argv = ["virsh", "-c", source_uri, "migrate", "--live" if options.live else "--offline"]
    for enabled, flag in (
        (options.peer_to_peer, "--p2p"),
        (options.tunnelled, "--tunnelled"),
        (options.persist_destination, "--persistent"),
        (options.undefine_source, "--undefinesource"),
        (options.copy_storage, "--copy-storage-all"),
        (options.auto_converge, "--auto-converge"),
        (options.allow_postcopy, "--postcopy"),
        (options.compressed, "--compressed"),
    ):
        if enabled:
            argv.append(flag)
    if options.bandwidth_mibps:
        argv += ["--bandwidth", str(options.bandwidth_mibps)]
    if options.completion_timeout_s and options.timeout_action == TimeoutAction.FORCE_COMPLETE and options.allow_postcopy:
        argv += ["--timeout", str(options.completion_timeout_s), "--timeout-postcopy"]
    argv += ["--verbose", guest, dest_uri]
    return shlex.join(argv)
