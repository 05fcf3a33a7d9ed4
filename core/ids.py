"""A database id, bounded, wherever one comes in: URLs (`<id:…>`) and forms (`IdModelChoiceField`).

Django's `<int:…>` and model choice fields accept any number of digits; an id past what the
database stores (SQLite and PostgreSQL keep 64-bit integers) then fails inside the query
with a 500. Here such an id is a 404 or a form error. Every urls.py and routing.py names ids
with `<id:…>` (registered in CoreConfig.ready()); forms choosing rows by id use the fields below.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.urls import register_converter

# The largest value of a BigAutoField (signed 64-bit), the widest id any portal table uses.
MAX_ID = 2**63 - 1
# More digits than MAX_ID has cannot be an id: not even parsed (a path of a million digits).
MAX_ID_DIGITS = len(str(MAX_ID))


def parse_id(value) -> int | None:
    """The id as an int, or None when it is not a whole number from 1 to MAX_ID."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit() or len(text) > MAX_ID_DIGITS:
            return None
        number = int(text)
    return number if 0 < number <= MAX_ID else None


class IdConverter:
    regex = f"[0-9]{{1,{MAX_ID_DIGITS}}}"

    def to_python(self, value: str) -> int:
        number = parse_id(value)
        if number is None:
            raise ValueError(f"{value} is not a database id")  # the URL does not match: 404
        return number

    def to_url(self, value) -> str:
        return str(int(value))


def register() -> None:
    register_converter(IdConverter, "id")


class IdModelChoiceField(forms.ModelChoiceField):
    """A ModelChoiceField whose submitted id is checked as an id before any query."""

    def to_python(self, value):
        if value not in self.empty_values and not isinstance(value, self.queryset.model) and parse_id(value) is None:
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)


class IdModelMultipleChoiceField(forms.ModelMultipleChoiceField):
    """A ModelMultipleChoiceField whose submitted ids are each checked as an id before any query."""

    def _check_values(self, value):
        for pk in value if isinstance(value, (list, tuple, set, frozenset)) else ():
            if parse_id(pk) is None:
                raise ValidationError(self.error_messages["invalid_pk_value"], code="invalid_pk_value",
                                      params={"pk": pk})
        return super()._check_values(value)
