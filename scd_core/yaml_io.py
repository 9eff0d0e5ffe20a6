"""The one YAML reader of the project: safe, strict about duplicate keys, YAML 1.2 floats.

PyYAML keeps the last of two equal keys without a word: a second ``fixed:`` block in a
search space silently replaced the first. Here a duplicate key is an error naming the file
and both lines. ``1e-5`` is read as a float (YAML 1.2); PyYAML alone (YAML 1.1) needs
``1.0e-5`` and would otherwise hand a string to code expecting a number.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_yaml", "parse_yaml"]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys and reads ``1e-5`` as a float."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: keys written here may override
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; the base class reports it
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+.0123456789")
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text (a ``key=value`` override's value, say); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file; errors (``OSError``, ``yaml.YAMLError``) name the file and line."""
    with open(path, encoding="utf-8") as stream:  # a stream, so that error marks carry the file name
        try:
            return yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
        except UnicodeDecodeError as err:  # a binary file given as YAML
            raise yaml.YAMLError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
