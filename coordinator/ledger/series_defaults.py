"""A series' counter until it is configured: where it starts and how it steps. Kept apart from
numbering.py (pydantic) so the offline verifier starts without loading pydantic."""

START = 1
INCREMENT = 1
