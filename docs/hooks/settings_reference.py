"""MkDocs hook: the settings reference page, written at build time from the settings model.

The page is generated on every build from ``pipeline.settings.Settings`` and the YAML files in
``configs/``, and never committed, so a new section, setting, bound or description shows up
without anyone editing the docs, and nothing in the docs can contradict the code.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from upath import UPath

from pipeline.settings import PROJECT_ROOT, Settings

PAGE = "settings-reference.md"
CONFIGS = PROJECT_ROOT / "configs"
PROJECT_PLACEHOLDER = "<project>"
TABLE_CLASS = "settings-table"  # docs/stylesheets/extra.css keeps its setting names on one line

_TYPE_NAMES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "local folder",
    UPath: "folder or URI",
}
_BOUNDS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "≤"),
)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, PAGE, content=settings_reference()))
    return files


def sections() -> dict[str, type[BaseModel]]:
    """The settings' sections (fields that are models themselves), in declaration order."""
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }


def settings_reference() -> str:
    prefix, delimiter = Settings.model_config["env_prefix"], Settings.model_config["env_nested_delimiter"]
    aliases = _conventional_variables()
    lines = [
        "# Settings reference",
        "",
        "Every setting of the pipeline, generated from the settings model (`pipeline/settings.py`) each time the",
        "docs are built. How settings are read and their precedence: [Configuration](configuration.md).",
        "",
        f"- In YAML: `section: {{setting: value}}`. In the environment: `{prefix}<SECTION>{delimiter}<SETTING>`,",
        "  in any case; a mapping is JSON there. Invalid values stop the program with a message naming the setting.",
        f"- `{PROJECT_PLACEHOLDER}` stands for the project's folder; defaults are the model's, before any YAML file.",
        "  What the shipped YAML files change: [Shipped configuration files](#shipped-configuration-files).",
        "",
    ]
    for section, model in sections().items():
        lines += [f"## `{section}`", ""]
        if model.__doc__:
            lines += [" ".join(model.__doc__.split()), ""]
        lines += [f'<div class="{TABLE_CLASS}" markdown>', "", "| setting | default | what it does |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            variables = [f"{prefix}{section}{delimiter}{name}".upper(), *aliases.get(f"{section}_{name}", [])]
            details = f"{_type_text(field)}; " + ", ".join(f"`{variable}`" for variable in variables)
            lines.append(
                f"| `{section}.{name}` | {_cell(_default_text(field))} "
                f"| {_cell(field.description or '')}<br><small>{_cell(details)}</small> |"
            )
        lines += ["", "</div>", ""]
    return "\n".join(lines + _shipped_configs())


def _conventional_variables() -> dict[str, list[str]]:
    """Top-level fields read from other variable names (``mongo_uri`` from ``MONGO_URI``), by field name.

    They are folded into the section setting of the same name (``mongo_uri`` into ``mongo.uri``).
    """
    return {
        name: list(field.validation_alias.choices)
        for name, field in Settings.model_fields.items()
        if isinstance(field.validation_alias, AliasChoices)
    }


def _type_text(field: FieldInfo) -> str:
    bounds = [
        f"{symbol} {getattr(rule, attribute)}"
        for rule in field.metadata
        for kind, attribute, symbol in _BOUNDS
        if isinstance(rule, kind)
    ]
    return ", ".join([_annotation_text(field.annotation), *bounds])


def _annotation_text(annotation: Any) -> str:
    origin, arguments = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return ", ".join(f"`{choice}`" for choice in arguments)
    if origin in (Union, types.UnionType):
        named = [_annotation_text(argument) for argument in arguments if argument is not type(None)]
        return " or ".join(named) + (", or unset" if type(None) in arguments else "")
    if origin is dict:
        key, value = (_annotation_text(argument) for argument in arguments)
        return f"mapping of {key} to {value}"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default_text(field: FieldInfo) -> str:
    return _value_text(field.get_default(call_default_factory=True))


def _value_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict | list) and not value:
        return "empty"
    text = str(value).replace(PROJECT_ROOT.as_uri(), f"file://{PROJECT_PLACEHOLDER}")
    return f"`{text.replace(str(PROJECT_ROOT), PROJECT_PLACEHOLDER)}`"


def _shipped_configs() -> list[str]:
    """What each YAML file under ``configs/`` sets, beside the model's default."""
    configs = {path.name: yaml.safe_load(path.read_text()) or {} for path in sorted(CONFIGS.glob("*.yaml"))}
    defaults = {
        (section, name): field for section, model in sections().items() for name, field in model.model_fields.items()
    }
    keys = sorted(
        {(section, name) for values in configs.values() for section, names in values.items() for name in names},
        key=list(defaults).index,
    )
    lines = [
        "## Shipped configuration files",
        "",
        "What each YAML file in `configs/` sets; a setting a file leaves out keeps its default. Which file is read:",
        "[Configuration](configuration.md).",
        "",
        "| setting | default | " + " | ".join(f"`configs/{name}`" for name in configs) + " |",
        "|---|---|" + "---|" * len(configs),
    ]
    for section, name in keys:
        values = [configs[file].get(section, {}).get(name) for file in configs]
        cells = ["–" if value is None else _value_text(value) for value in values]
        lines.append(f"| `{section}.{name}` | {_default_text(defaults[section, name])} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _cell(text: str) -> str:
    """Text on one line, its pipes escaped, as a Markdown table cell needs."""
    return " ".join(text.split()).replace("|", "\\|")
