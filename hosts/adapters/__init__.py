"""Adapters to the outside world: hypervisor hosts over SSH and libvirt.

Plain Python, never Django: the modules here take connection details and
return dataclasses, always close what they open, and raise only the errors in
``hosts.adapters.errors``.

- ``ssh``: host key pinning, ``SSHSession.run(argv)``, the portal's key pair.
- ``libvirt``: connections (host key verified for qemu+ssh), host facts,
  guests, start/stop, lifecycle events.
- ``facts``: what libvirt does not tell (os-release, storage, name lookups).
- ``migration``: migrate (peer-to-peer or managed), job statistics, abort,
  downtime/speed/post-copy, where a guest is, guest CPU comparison, pools.
"""
