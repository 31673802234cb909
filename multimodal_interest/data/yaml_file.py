"""Reading a YAML file by the loader rule (:mod:`fusion.files`): bounded, and every error
at its line.

PyYAML's safe loader alone accepts what no hand-written manifest needs and what a hostile
one uses: aliases that expand exponentially (a 1 KB "billion laughs" file), an alias inside
its own anchor (a cycle, which ends in RecursionError), collections nested past Python's
stack, and a repeated key, of which it silently keeps the last. :func:`load_yaml` refuses
each of them, naming the file and line, as it refuses a file over :data:`YAML_LIMIT` bytes
and a value that does not convert (a 5,000-digit integer). Aliases stay shared, never
expanded: the size counted is the expanded one, computed once per node.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fusion.files import DEPTH_LIMIT, FileRefused, read_bytes

YAML_LIMIT = 16 << 20  # bytes of a YAML file (a manifest, a training configuration)
EXPANDED_LIMIT = 100_000  # nodes of the document with every alias expanded


class YamlRefused(FileRefused):
    """A YAML file refused by :func:`load_yaml`; ``line`` is 1-based (None: the whole file)."""

    def __init__(self, path: str | os.PathLike, reason: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"{path}:{line}" if line else path, reason)
        self.path = str(path)


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML document: ``data`` (plain Python values) and its node tree, which
    knows where each key was written (:meth:`line_of`)."""

    data: Any
    root: yaml.Node | None

    def line_of(self, path: tuple) -> int | None:
        """The 1-based line of the key at ``path`` (keys from the top), else of the nearest
        key above it that exists; None when not even the first does. Follows the node
        tree (aliases included) along ``path`` only: nothing is expanded."""
        node, line = self.root, None
        for key in path:
            if not isinstance(node, yaml.MappingNode):
                break
            hit = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)
                        and k.value == str(key)), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        return line


def load_yaml(path: str | os.PathLike, shown: str | os.PathLike | None = None) -> YamlDocument:
    """The one YAML document in the file at ``path``, or :class:`YamlRefused` naming the
    file (``shown``, if given) and line."""
    shown = shown if shown is not None else path
    text = read_bytes(Path(path), YAML_LIMIT, shown)
    try:
        text = text.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise YamlRefused(shown, f"not valid UTF-8 text ({e})") from None
    loader = _Loader(text, shown)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_tree(root, shown)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise YamlRefused(shown, _message(e), mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise YamlRefused(shown, f"cannot parse: {e}") from None
    finally:
        loader.dispose()
    return YamlDocument(data, root)


def _message(e: yaml.MarkedYAMLError) -> str:
    return " ".join(str(x) for x in (e.context, e.problem) if x) or "cannot parse"


class _Loader(yaml.SafeLoader):
    """The safe loader, composing with a depth cap, refusing an alias used inside its own
    anchor, and turning a value that does not convert into an error at its line."""

    def __init__(self, text: str, shown: str | os.PathLike) -> None:
        super().__init__(text)
        self._open: list[str] = []  # anchors of the collections being composed
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self._open:
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is used inside its own "
                                              f"anchor &{event.anchor} (a recursive alias)", event.start_mark)
        if self._depth >= DEPTH_LIMIT:
            raise yaml.composer.ComposerError(None, None, f"nested more than {DEPTH_LIMIT} deep",
                                              event.start_mark)
        anchor = getattr(event, "anchor", None) if not isinstance(event, yaml.AliasEvent) else None
        self._depth += 1
        self._open.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.pop()
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:  # int("9" * 5000), a date out of range, ...
            raise yaml.constructor.ConstructorError(None, None, f"cannot read this value ({e})",
                                                    node.start_mark) from None


def _check_tree(root: yaml.Node, shown) -> None:
    """Refuse a repeated key (at its second line) and a document whose aliases expand past
    :data:`EXPANDED_LIMIT` nodes. Visits each node once (iteratively): aliases are counted
    by the size of what they share, never walked again."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if not done:
            if isinstance(node, yaml.MappingNode):
                _no_repeated_key(node)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
            continue
        size[id(node)] = 1 + sum(size[id(c)] for c in children)
        if size[id(node)] > EXPANDED_LIMIT:
            raise yaml.composer.ComposerError(
                None, None, f"its aliases expand to more than {EXPANDED_LIMIT} values (an alias bomb)",
                node.start_mark)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _no_repeated_key(node: yaml.MappingNode) -> None:
    seen: dict[tuple, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        ident = (key.tag, key.value)
        if ident in seen:
            raise yaml.composer.ComposerError(
                None, None, f"key {key.value!r} repeated (first on line {seen[ident]}); a mapping "
                            f"holds each key once", key.start_mark)
        seen[ident] = key.start_mark.line + 1
