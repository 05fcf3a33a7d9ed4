from tests.unit.maintenance.conftest import evac  # noqa: F401  (kvm-a holds the guests; kvm-b, kvm-c empty)
