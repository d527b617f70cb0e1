"""Reversible partition keys for batch file names.

A batch file's partition key is its file name with every unsafe character percent-encoded,
as in URLs (RFC 3986): each UTF-8 byte of the character becomes ``%XX`` with upper-case hex
digits. Safe characters are ASCII letters, digits, ``_``, ``-`` and ``.``, except that a dot
at the start of the name or right after another dot is encoded too, because Dagster rejects
keys containing ``...``. ``%`` itself is always encoded, so decoding is unambiguous.

Names made of safe characters only keep their name as key (``news.csv`` stays ``news.csv``);
``Q1 tweets.csv`` becomes ``Q1%20tweets.csv``. A key is accepted only in the exact form that
encoding produces, so two different keys can never name the same file.
"""

from __future__ import annotations

import string

# Keys appear in run tags, in the Dagster UI and in its URLs. Common file systems allow names
# of at most 255 bytes, so every plain ASCII file name fits.
MAX_KEY_LENGTH = 255

_SAFE_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-.")
_HEX_DIGITS = frozenset("0123456789ABCDEF")


class PartitionKeyError(ValueError):
    """Raised when a file name cannot become a partition key, or a key names no valid file."""


def key_for_file_name(name: str) -> str:
    """Return the partition key of a batch file called ``name``.

    Raises :class:`PartitionKeyError` for an empty name, a name with a path separator or a
    NUL byte, or a name whose key would exceed :data:`MAX_KEY_LENGTH` characters.
    """
    if not name or name in {".", ".."}:
        raise PartitionKeyError(f"{name!r} is not a file name.")
    if "/" in name or "\\" in name or "\0" in name:
        raise PartitionKeyError(f"the file name {name!r} contains a path separator or a NUL byte.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PartitionKeyError(
            f"the file name {name!r} is not valid Unicode (undecodable byte at position {error.start}); "
            "rename the file using UTF-8."
        ) from error

    parts = []
    previous = ""
    for character in name:
        dot_needs_encoding = character == "." and (previous in {"", "."})
        if character in _SAFE_CHARACTERS and not dot_needs_encoding:
            parts.append(character)
        else:
            parts.append("".join(f"%{byte:02X}" for byte in character.encode("utf-8")))
        previous = character
    key = "".join(parts)

    if len(key) > MAX_KEY_LENGTH:
        raise PartitionKeyError(
            f"the file name {name!r} gives a partition key of {len(key)} characters, more than the "
            f"{MAX_KEY_LENGTH} allowed (characters other than ASCII letters, digits, '_', '-' and '.' take "
            "3 characters per UTF-8 byte). Rename the file to a shorter name."
        )
    return key


def file_name_for_key(key: str) -> str:
    """Return the batch file name that partition key ``key`` was made from.

    Raises :class:`PartitionKeyError` when ``key`` is not exactly what
    :func:`key_for_file_name` returns for some file name.
    """
    unsafe = sorted({character for character in key if character not in _SAFE_CHARACTERS and character != "%"})
    if unsafe:
        raise PartitionKeyError(
            f"partition key {key!r} contains {', '.join(map(repr, unsafe))}, which encoded keys never contain."
        )

    decoded = bytearray()
    position = 0
    while position < len(key):
        if key[position] == "%":
            digits = key[position + 1 : position + 3]
            if len(digits) != 2 or not set(digits) <= _HEX_DIGITS:
                raise PartitionKeyError(
                    f"partition key {key!r}: '%' at position {position} is not followed by two upper-case hex digits."
                )
            decoded.append(int(digits, 16))
            position += 3
        else:
            decoded += key[position].encode("ascii")
            position += 1

    try:
        name = decoded.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PartitionKeyError(f"partition key {key!r} does not decode to UTF-8: {error.reason}.") from error
    if key_for_file_name(name) != key:
        raise PartitionKeyError(
            f"partition key {key!r} is not in canonical form; the file {name!r} has the key {key_for_file_name(name)!r}."
        )
    return name
