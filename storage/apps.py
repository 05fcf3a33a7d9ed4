from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"
    verbose_name = "Shared storage (NFS shares and libvirt pools)"
