#!/usr/bin/env python
"""Django's command-line utility for VMPortal."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
    from django.core.management import execute_from_command_line

    from vmportal.keys import MissingKey

    try:
        execute_from_command_line(sys.argv)
    except MissingKey as exc:
        # What to set, in one line: a traceback would bury it.
        sys.exit(f"manage.py: {exc}")


if __name__ == "__main__":
    main()
