"""A new WebService token, written into the agent's TOML settings file (the seed's "generate
token" button)."""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import tomllib
from pathlib import Path

KEY = "webservice_token"
# The key at the top level of the file: before the first table header.
_EXISTING = re.compile(rf"^[ \t]*{KEY}[ \t]*=.*$", re.MULTILINE)
_TABLE = re.compile(r"^[ \t]*\[", re.MULTILINE)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def store_token(path: Path, token: str) -> None:
    """Set ``webservice_token`` in the TOML file at ``path`` (created when missing), keeping
    every other line as it is. The file is replaced at once (a reader sees the old or the
    new file, never half of one) and keeps its permissions; a new one is readable by its
    owner only, as it holds a secret."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # the agent could not read it either: leave it
        raise ValueError(f"{path} is not valid TOML ({exc}); nothing written") from None
    line = f'{KEY} = "{token}"'
    tables = _TABLE.search(text)
    top_end = tables.start() if tables else len(text)
    found = _EXISTING.search(text, 0, top_end)
    if found:
        text = text[: found.start()] + line + text[found.end() :]
    else:
        text = (
            text[:top_end]
            + ("" if not text[:top_end] or text[:top_end].endswith("\n") else "\n")
            + line
            + "\n"
            + text[top_end:]
        )
    if tomllib.loads(text).get(KEY) != token:
        raise ValueError(f"{path}: could not set {KEY} (is it defined twice, or in a table?)")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(scratch, mode)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
