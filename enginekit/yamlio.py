"""YAML reading shared by the pipeline's config and the server's settings.

PyYAML follows YAML 1.1, where ``1e-4`` and ``2e-5`` are strings, not numbers (1.1 wants ``1.0e-4``).
With strict config models that turns a learning rate written as anyone writes it into "Input should be a
valid number". ``load`` resolves floats as YAML 1.2 does; everything else is ``yaml.safe_load``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

YAMLError = yaml.YAMLError


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.2 core schema floats (and 1.1's .inf/.nan spellings), so 1e-4, 1E5 and -2.5e+3 are numbers.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_INT = re.compile(r"^[-+]?[0-9]+$")

# Replace the float resolver: first-character dispatch, as PyYAML stores resolvers.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _FloatPattern:
    """Matches YAML 1.2 floats that are not plain integers (those stay ints)."""

    @staticmethod
    def match(text: str) -> bool:
        return bool(_FLOAT.match(text)) and not _INT.match(text)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FloatPattern, list("-+0123456789."))


def load(text: str) -> Any:
    """Parse one YAML document with YAML 1.2 floats; raises ``yaml.YAMLError`` (``YAMLError`` here)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
