"""Networks written in Python by the people who run the service: entry points, never HTTP code.

A plugin is an entry point of the group ``regtune.networks`` in an installed distribution::

    [project.entry-points."regtune.networks"]
    resnet_tiny = "my_networks:build"

``build(input_shape: tuple[int, ...], n_outputs: int, **options) -> torch.nn.Module`` returns a
module mapping ``[batch, *input_shape]`` to ``[batch, n_outputs]``. A request names the entry
point (``model.name``), never a module path, so nothing sent over HTTP is imported or run as
code: only what the operator installed can be called.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from torch import nn

GROUP = "regtune.networks"


class PluginError(LookupError):
    """The plugin is not installed here (``field`` "model.name"), or its ``build`` refused
    the options (``field`` "model.options")."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Plugin:
    """An installed network plugin: its entry point and the distribution that provides it."""

    name: str
    entry_point: EntryPoint

    @property
    def package(self) -> str | None:
        dist = self.entry_point.dist
        return None if dist is None else dist.metadata["Name"]

    @property
    def version(self) -> str | None:
        dist = self.entry_point.dist
        return None if dist is None else dist.version

    def build(
        self, input_shape: tuple[int, ...], n_outputs: int, options: dict[str, Any]
    ) -> nn.Module:
        """The plugin's module; any error of its ``build`` is a :class:`PluginError`."""
        try:
            module = self.entry_point.load()(tuple(input_shape), n_outputs, **options)
        except Exception as exc:
            raise PluginError(
                f"plugin {self.name!r} could not build its network with options {options}: "
                f"{type(exc).__name__}: {exc}",
                "model.options",
            ) from exc
        if not isinstance(module, nn.Module):
            raise PluginError(
                f"plugin {self.name!r} returned a {type(module).__name__}, not a torch.nn.Module",
                "model.options",
            )
        return module


def installed() -> dict[str, Plugin]:
    """Every plugin of the group installed in this environment, by name."""
    return {ep.name: Plugin(ep.name, ep) for ep in entry_points(group=GROUP)}


def find(name: str) -> Plugin:
    """The plugin ``name``, or a :class:`PluginError` saying what is installed instead."""
    plugins = installed()
    if name not in plugins:
        here = ", ".join(sorted(plugins)) or "none"
        raise PluginError(
            f"network plugin {name!r} is not installed on this host (entry points of the "
            f"group {GROUP!r} here: {here})",
            "model.name",
        )
    return plugins[name]
