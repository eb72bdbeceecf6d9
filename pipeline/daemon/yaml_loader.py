"""The one YAML loader for config.yaml and sidecars (yaml_read.read_yaml): safe_load's, with two of YAML 1.2's rules
that PyYAML (YAML 1.1) lacks, each of which changed what a person wrote without a word (rev9c).

- ``1e-5`` and ``1e6`` are numbers. YAML 1.1 wants a dot (``1.0e-5``) and read them as text, so
  ``style_weight: 1e-5``, as README's Balance section writes it, was refused as "must be a number".
- A key is written once in a mapping. PyYAML keeps the last silently: a recipe block copied to make a new one and
  not yet renamed replaced the first, and `validate` said OK. :func:`written_twice` names both lines.
"""
from __future__ import annotations

import re

import yaml

FLOAT_TAG = "tag:yaml.org,2002:float"
MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML 1.2's float (the exponent's dot optional), with 1.1's sexagesimal, .inf and .nan kept as PyYAML reads them.
FLOAT_1_2 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class Loader(yaml.SafeLoader):
    """yaml.SafeLoader reading ``1e-5`` as a float. Its resolvers are a copy: SafeLoader's own stay as they are."""

    yaml_implicit_resolvers = {first: [rule for rule in rules if rule[0] != FLOAT_TAG]
                               for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()}


Loader.add_implicit_resolver(FLOAT_TAG, FLOAT_1_2, list("-+0123456789."))  # after int's rule: 10 stays an int


def written_twice(node: yaml.Node) -> list[str]:
    """'LINE: dotted.key: written twice (first at line N); ...' for each key a mapping of the composed document
    holds twice, in file order. Merge keys (``<<: *base``) are YAML's own way to override and are not counted;
    a node reached again through an alias is walked once."""
    found: list[tuple[int, str]] = []
    _walk(node, (), set(), found)
    return [text for _, text in sorted(found)]


def _walk(node: yaml.Node, path: tuple, seen: set[int], found: list[tuple[int, str]]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), seen, found)
    elif isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != MERGE_TAG:
                line = key.start_mark.line + 1
                if (key.tag, key.value) in first:
                    found.append((line, f"{line}: {'.'.join(map(str, path + (key.value,)))}: written twice (first at "
                                        f"line {first[key.tag, key.value]}); YAML keeps only the last: remove or "
                                        "rename one"))
                first.setdefault((key.tag, key.value), line)
            _walk(value, path + (key.value if isinstance(key, yaml.ScalarNode) else "?",), seen, found)
