"""The one way campaignflow reads YAML that people write: campaign specs (the file, and the copy the store
keeps) and channels.yaml.

`yaml.safe_load` alone lets the second of two equal keys silently win, recurses without bound on deep
nesting, crashes on an impossible date or `!!int abc`, and expands aliases without limit. `load_yaml`
refuses each of these with the line, as a `YamlRefused` listing every problem found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from campaignflow.errors import UserError

# No real campaign comes near these; a spec of 1 MB is already some 300 deliverables.
MAX_BYTES = 1_000_000
MAX_DEPTH = 50  # a spec nests 6 levels deep
MAX_VALUES = 200_000  # values after expanding aliases (*name); guards against "billion laughs"

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ten times faster on many stored specs
_MERGE = "tag:yaml.org,2002:merge"


class YamlRefused(UserError):
    """YAML that cannot be read safely; each problem is `where: what, and the fix`."""

    def __init__(self, problems: list[str], source: str):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


def read_text(path: Path, source: str | None = None) -> str:
    """A file people wrote, as text: at most MAX_BYTES (checked before reading it whole) and UTF-8."""
    source = source or str(path)
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)  # never more, whatever the file claims to be
    if len(data) > MAX_BYTES:
        raise YamlRefused([_too_large(path.stat().st_size)], source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise YamlRefused([f"line {line}, column {column}: byte 0x{data[exc.start]:02x} is not UTF-8 text; "
                           "save the file as UTF-8"], source) from None


def _too_large(size: int) -> str:
    return (f"(file): {size:,} bytes is more than the limit of {MAX_BYTES:,} bytes (1 MB); "
            "no campaign needs that much, so check that this is the right file")


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document people wrote; raise YamlRefused naming each problem and its line."""
    if len(text) > MAX_BYTES:
        raise YamlRefused([_too_large(len(text.encode("utf-8", "replace")))], source)
    try:
        _check_depth(text, source)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_keys_and_size(loader, node, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise YamlRefused([_yaml_error(exc)], source) from None


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "maximum nesting depth" in problem:  # libyaml's own limit, met before ours on flow collections
        return f"{where}: nested too deeply; a spec needs fewer than 10 levels"
    return f"{where}: not valid YAML ({problem})"


class _Loader(_Base):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # An explicit tag with a value it cannot hold (`!!int abc`, `!!bool maybe`), or an integer of
        # thousands of digits: say where, instead of a ValueError from deep inside PyYAML.
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            value = node.value if isinstance(node.value, str) else "…"
            tag = node.tag.rsplit(":", 1)[-1]
            shown = value if len(value) <= 40 else value[:40] + "…"
            raise ConstructorError(None, None, f"{shown!r} cannot be read as {tag}", node.start_mark) from None

    def construct_date_or_text(self, node: yaml.ScalarNode) -> Any:
        # 2027-02-30 looks like a date but is none: keep the text, so the spec's validation names the field.
        try:
            return self.construct_yaml_timestamp(node)
        except (ValueError, AttributeError):
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_date_or_text)


def _check_depth(text: str, source: str) -> None:
    """Refuse deep nesting from the event stream, before any recursive step (composing, validating, hashing)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlRefused([f"line {mark.line + 1}, column {mark.column + 1}: nested more than {MAX_DEPTH} "
                                   "levels deep; a spec needs fewer than 10"], source)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_keys_and_size(loader: _Loader, root: yaml.Node, source: str) -> None:
    """Every key once per mapping, no NUL characters (PostgreSQL cannot store them), and aliases that
    expand to a bounded tree (not a cycle, not a bomb)."""
    problems: list[tuple[int, str]] = []
    checked: set[int] = set()  # mappings whose keys were checked (an alias visits its anchor again)
    stack: list[tuple[yaml.Node, str, int]] = [(root, "", 0)]
    visited = 0
    while stack:
        node, path, depth = stack.pop()
        visited += 1
        if visited > MAX_VALUES or depth > MAX_DEPTH:
            raise YamlRefused([f"line {node.start_mark.line + 1}: aliases (*name) expand to more than {MAX_VALUES:,} "
                               f"values or {MAX_DEPTH} levels (an alias inside its own anchor?); write the values out"],
                              source)
        if isinstance(node, yaml.ScalarNode):
            if "\x00" in node.value:
                problems.append((node.start_mark.line + 1, f"{path or '(top)'}: contains a NUL character; remove it"))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(node.value))
        else:
            if id(node) not in checked:
                checked.add(id(node))
                problems += _key_problems(loader, node, path)
            for key_node, value_node in node.value:
                key = _key(loader, key_node)
                stack.append((value_node, f"{path}.{key}" if path else str(key), depth + 1))
    if problems:
        raise YamlRefused([problem for _, problem in sorted(problems)], source)


def _key_problems(loader: _Loader, node: yaml.MappingNode, path: str) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = _key(loader, key_node)
        if key is None:
            continue
        line = key_node.start_mark.line + 1
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and "\x00" in key:
            problems.append((line, f"{path or '(top)'}: a key contains a NUL character; remove it"))
        elif key in first_line:
            problems.append((line, f"{where}: given twice, on line {first_line[key]} and line {line}; "
                                   "keep one (YAML would silently use the last)"))
        else:
            first_line[key] = line
    return problems


def _key(loader: _Loader, node: yaml.Node) -> Any:
    """A plain key as YAML reads it (so `1` and `01` are the same key); None for a complex key."""
    if not isinstance(node, yaml.ScalarNode) or node.tag == _MERGE:
        return None
    key = loader.construct_object(node)
    return key if isinstance(key, (str, int, float, bool)) or key is None else str(key)
