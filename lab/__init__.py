"""VMPortal's lab: real libvirt hosts in network namespaces on one machine.

See lab/README.md. Standard library only, so it runs with any python3 and
drives the hosts through the real command-line tools (ip, nsenter, virsh, ssh).
"""
