"""Reading a task spec file's YAML: safely, fast, and with the source text of every scalar.

Specs come from whoever can write the spec folder, and every DAG file parses its spec at import
time in the scheduler's DAG processor.  :func:`load_yaml_with_texts` returns the document and, for
the quoting hints of :mod:`metabackup.fields`, the text of each scalar YAML did not read as a string.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from metabackup.errors import SpecError
from metabackup.fields import key_text, short, short_text

# ---------------------------------------------------------------------------------------------
# Reading a spec file.  Specs come from whoever can write the spec folder, and every DAG file parses
# its spec at import time in the scheduler's DAG processor: the reader refuses, fast and with a
# position, what a task spec never needs and an attacker or a slip would use:
#   - files over MAX_SPEC_BYTES (read no further than the cap),
#   - anchors and aliases (an alias "bomb" expands a few lines into billions of nodes),
#   - nesting deeper than MAX_SPEC_DEPTH (the composer recurses),
#   - duplicate mapping keys at any depth (the later value would silently win), and merge keys.
# It composes nodes with libyaml's parser when available and constructs with SafeConstructor.
# ---------------------------------------------------------------------------------------------
MAX_SPEC_BYTES = 64 * 1024
MAX_SPEC_DEPTH = 32

class _Refused(yaml.YAMLError):
    def __init__(self, mark: Any, reason: str):
        super().__init__(reason)
        self.mark, self.reason = mark, reason


class _StrictComposer(yaml.composer.Composer):
    """A composer that refuses anchors, aliases and deep nesting as soon as the parser meets them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(event.start_mark, f"YAML aliases/anchors are not allowed (found alias *{short_text(event.anchor, 40)}); "
                                             "write the value out in full")
        if getattr(event, "anchor", None) is not None:
            raise _Refused(event.start_mark, f"YAML aliases/anchors are not allowed (found anchor &{short_text(event.anchor, 40)}); "
                                             "write the value out in full")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                raise _Refused(event.start_mark, f"nesting deeper than {MAX_SPEC_DEPTH} levels is not allowed in a task spec")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PySpecLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _StrictComposer,
                    yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """yaml.SafeLoader's parts with the strict composer (used when PyYAML has no libyaml)."""

    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _StrictComposer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


_CParser = getattr(getattr(yaml, "_yaml", None), "CParser", None)
_SpecLoader: type = _PySpecLoader
if _CParser is not None and getattr(yaml, "__with_libyaml__", False):
    class _CSpecLoader(_StrictComposer, _CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """yaml.CSafeLoader's parser (libyaml) feeding the strict composer, then SafeConstructor."""

        def __init__(self, stream: str):
            _CParser.__init__(self, stream)
            _StrictComposer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _SpecLoader = _CSpecLoader

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(loader: Any, node: Any, path: str, problems: list[tuple[str, str]], texts: dict[str, str]) -> None:
    """Duplicate and non-scalar mapping keys at any depth (``problems``: field, reason), and the source
    text of every scalar YAML did not read as a string (``texts``: field -> text, for quoting hints)."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag != _STR_TAG:
            texts[path] = node.value
            try:  # the constructor keeps it for construct_document
                loader.construct_object(node)
            except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer of 5000 digits
                problems.append((path or "<file>", f"line {node.start_mark.line + 1}: the value "
                                                   f"{short_text(node.value, 60)} cannot be read ({short_text(exc)})"))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_nodes(loader, item, f"{path}[{i}]", problems, texts)
    elif isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                problems.append((path or "<file>", f"YAML merge keys (<<, line {line}) are not allowed; write the fields out"))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append((path or "<file>", f"line {line}: a mapping key must be a plain name, not a "
                                                   f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}"))
                continue
            try:
                key = loader.construct_object(key_node)
            except (ValueError, TypeError, OverflowError) as exc:
                problems.append((path or "<file>", f"line {line}: the key {short_text(key_node.value, 60)} cannot be "
                                                   f"read ({short_text(exc)})"))
                continue
            fld = f"{path}.{key_text(key)}" if path else key_text(key)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key; the constructor reports it
                seen = None
            if seen is not None:
                problems.append((fld, f"duplicate key {short(key)} at line {line} (first at line {seen}); the later "
                                      "value would silently replace the earlier one: keep one"))
            else:
                first[key] = line
            _check_nodes(loader, value_node, fld, problems, texts)


def _read_capped(path: Path) -> str:
    """The file's text, reading no more than the cap; a FIFO or device named *.yaml is refused, not read
    (O_NONBLOCK: opening a FIFO without a writer would otherwise hang the DAG processor)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise SpecError([(str(path), "<file>", "is not a regular file; a task spec is a plain YAML file")])
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([(str(path), "<file>", f"cannot be read: {exc}")]) from exc
    if len(data) > MAX_SPEC_BYTES:
        size = max(info.st_size, len(data))
        raise SpecError([(str(path), "<file>", f"is {size} bytes, over the {MAX_SPEC_BYTES}-byte "
                                               f"({MAX_SPEC_BYTES // 1024} KiB) limit for a task spec")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([(str(path), "<file>", f"cannot be read: {exc}")]) from exc


def load_yaml_with_texts(path: Path) -> tuple[Any, dict[str, str]]:
    """The document of ``path`` and the source text of its non-string scalars by field."""
    text = _read_capped(path)
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        problems: list[tuple[str, str]] = []
        texts: dict[str, str] = {}
        _check_nodes(loader, node, "", problems, texts)
        if problems:
            raise SpecError([(str(path), fld, reason) for fld, reason in problems])
        return loader.construct_document(node), texts
    except SpecError:
        raise
    except _Refused as exc:
        where = f"line {exc.mark.line + 1}, column {exc.mark.column + 1}"
        raise SpecError([(str(path), where, exc.reason)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        problem = getattr(exc, "problem", None) or exc
        raise SpecError([(str(path), where, f"is not valid YAML: {short_text(problem)}")]) from None
    except RecursionError:
        raise SpecError([(str(path), "<file>", "is nested too deeply to read")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor failing outside yaml.YAMLError
        raise SpecError([(str(path), "<file>", f"is not valid YAML: {short_text(exc)}")]) from None
    finally:
        loader.dispose()
