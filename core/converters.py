"""The `<id:…>` path converter: a database id, bounded, so an out-of-range id is a 404.

Django's `<int:…>` accepts any number of digits; an id past what the database stores
(SQLite and PostgreSQL keep 64-bit integers) then fails inside the query with a 500. Every
urls.py and routing.py names ids with `<id:…>` instead (registered in CoreConfig.ready()).
"""

from django.urls import register_converter

# The largest value of a BigAutoField (signed 64-bit), the widest id any portal table uses.
MAX_ID = 2**63 - 1


class IdConverter:
    # At most 19 digits before the value check, so a path of a million digits is not parsed.
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 0 < number <= MAX_ID:
            raise ValueError(f"{value} is not a database id")  # the URL does not match: 404
        return number

    def to_url(self, value) -> str:
        return str(int(value))


def register() -> None:
    register_converter(IdConverter, "id")
