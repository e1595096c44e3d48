"""``multipart/related`` bodies (RFC 2387) for WADO-RS, streamed part by part from files."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK = 1 << 20


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def file_parts(parts: Iterable[tuple[str, Path]], boundary: str) -> Iterator[bytes]:
    """Each (part Content-Type, file) as one part with the file's bytes exactly."""
    for part_type, path in parts:
        yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode("ascii")
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def byte_parts(parts: Iterable[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    for part_type, data in parts:
        yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode("ascii") + data + b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")
