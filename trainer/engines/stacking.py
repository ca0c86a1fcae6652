"""A network's forward pass as a program over stacked values, for the population engine.

The population engine trains M copies of one network, each with its own weights, as batched
kernels over values shaped ``[M, B, *shape]``. Any network whose graph is made of the layers
below can be run that way: :func:`program` traces the template with ``torch.fx`` and turns
every node into an operation on stacked values. Layers with weights (Linear, Conv1d/2d,
BatchNorm1d/2d) and dropout call back into the stack that holds the M models' tensors
(:class:`Stack`, implemented by :class:`trainer.engines.stacked_layers.StackedLayers`), so each
of them has exactly one stacked implementation; parameter-free layers run as they are, on the
stacked value (elementwise ones) or on ``[M·B, …]`` (pooling).

Why not ``torch.func.vmap`` over ``functional_call``: BatchNorm's running statistics are
updated in place (which ``vmap`` refuses), each model needs its own momentum, its statistics
must skip the padding rows of a partial batch, and dropout must draw the counter-based masks
that make a model's training independent of its neighbours (:mod:`trainer.rng`). Those are
the layers where the population engine's arithmetic differs from torch's; the rest is one
batched matmul or one grouped convolution either way.

A network that uses anything else (an LSTM, an embedding, a ``view`` whose size depends on
the batch, shared weights) is not stackable: :class:`Unstackable` says which node and why, and
its trials train in the per-trial engine.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import fx, nn
from torch.nn import functional as F

from trainer.nets.networks import DROPOUTS, NORMS

Op = Callable[["Stack", Any, tuple[Any, ...], dict[str, Any]], Any]
Arguments = Callable[
    [dict[fx.Node, Any]], tuple[Any, ...]
]  # a node's inputs from the values so far

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
# Elementwise and parameter-free: they act on a stacked value as on one model's.
ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.Softplus,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Identity,
)
# Per sample and channel: they act on [M·B, C, …] as on a batch of M·B samples.
POOLING_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    torch.add,
    torch.sub,
    torch.mul,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    F.relu,
    F.gelu,
    F.leaky_relu,
    F.silu,
    F.elu,
}
ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "add", "sub", "mul"}


class Unstackable(ValueError):
    """The network has a node the population engine cannot run stacked (the message says)."""


class Stack(Protocol):
    """The stacked layers with weights, held by the population (one row per model)."""

    def linear(self, layer: int, h: torch.Tensor) -> torch.Tensor: ...

    def convolve(self, layer: int, h: torch.Tensor) -> torch.Tensor: ...

    def batch_norm(self, norm: int, h: torch.Tensor, context: Any) -> torch.Tensor: ...

    def dropout(self, index: int, h: torch.Tensor, context: Any) -> torch.Tensor: ...


@dataclass
class Program:
    """A traced network: its operations in order, and the modules the stack holds for it.

    ``layers``: the Linear/Conv modules' names in call order (the stack's weight ``i``),
    ``norms``: the BatchNorms', ``dropouts``: each dropout's name, group and whether it drops
    whole channels (``Dropout1d/2d``).
    """

    input: fx.Node | None = None
    # Per node: the node, its operation, and its arguments resolved once (read every step).
    steps: list[
        tuple[fx.Node, Op, Callable[[dict[fx.Node, Any]], tuple[Any, ...]], dict[str, Any]]
    ] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    dropouts: list[tuple[str, str | None, bool]] = field(default_factory=list)
    output: Any = None

    def run(self, stack: Stack, x: torch.Tensor, context: Any) -> torch.Tensor:
        """The network on stacked inputs ``x`` ``[M, B, n_features]``; ``context`` is the
        pass's (training or evaluation, valid rows, dropout keys), handed to the stack."""
        assert self.input is not None
        env: dict[fx.Node, Any] = {self.input: x}
        for node, op, args, kwargs in self.steps:
            env[node] = op(stack, context, args(env), kwargs)
        return _resolved(self.output, env)

    def add(self, node: fx.Node, op: Op) -> None:
        if any(isinstance(v, fx.Node) for v in node.kwargs.values()):
            raise Unstackable(f"node {node.name!r} takes a tensor as a keyword argument")
        self.steps.append((node, op, _arguments(node.args), dict(node.kwargs)))


def _arguments(args: tuple[Any, ...]) -> Arguments:
    """A node's positional arguments from the values computed so far: the nodes looked up,
    constants as they are (nested ones, such as ``torch.cat``'s list, by :func:`_resolved`)."""
    if len(args) == 1 and isinstance(args[0], fx.Node):
        only = args[0]
        return lambda env: (env[only],)
    if any(isinstance(a, list | tuple | dict) for a in args):
        return lambda env: _resolved(args, env)
    return lambda env: tuple(env[a] if isinstance(a, fx.Node) else a for a in args)


def _resolved(value: Any, env: dict[fx.Node, Any]) -> Any:
    """``value`` with each node replaced by its value in ``env``, through lists, tuples and
    dicts: what ``fx.node.map_arg`` does, in Python that dynamo traces (map_arg's ``callable``
    check on ``env.__getitem__`` broke the compiled step's graph in three)."""
    if isinstance(value, fx.Node):
        return env[value]
    if isinstance(value, list | tuple):
        return type(value)(_resolved(v, env) for v in value)
    if isinstance(value, dict):
        return {k: _resolved(v, env) for k, v in value.items()}
    return value


def _shift(dim: int, what: str) -> int:
    """A per-sample axis of one model's ``[B, …]`` as an axis of the stacked ``[M, B, …]``."""
    if dim == 0:
        raise Unstackable(f"{what} acts on the batch axis")
    return dim + 1 if dim > 0 else dim


def _module_op(name: str, module: nn.Module, prog: Program) -> Op:
    kind = type(module).__name__
    if isinstance(module, LAYERS):
        if name in prog.layers:
            raise Unstackable(f"module {name!r} ({kind}) is called twice (shared weights)")
        if isinstance(module, nn.Conv1d | nn.Conv2d) and (
            module.groups != 1 or module.padding_mode != "zeros"
        ):
            raise Unstackable(f"module {name!r} ({kind}) has groups or a padding mode")
        i = len(prog.layers)
        prog.layers.append(name)
        if isinstance(module, nn.Linear):
            return lambda s, c, a, k: s.linear(i, a[0])
        return lambda s, c, a, k: s.convolve(i, a[0])
    if isinstance(module, NORMS):
        if name in prog.norms or not (module.affine and module.track_running_stats):
            raise Unstackable(
                f"module {name!r} ({kind}) is shared, or has no affine or no running statistics"
            )
        j = len(prog.norms)
        prog.norms.append(name)
        return lambda s, c, a, k: s.batch_norm(j, a[0], c)
    if isinstance(module, DROPOUTS):
        d = len(prog.dropouts)
        channels = isinstance(module, nn.Dropout1d | nn.Dropout2d)
        prog.dropouts.append((name, getattr(module, "group", None), channels))
        return lambda s, c, a, k: s.dropout(d, a[0], c)
    if isinstance(module, ELEMENTWISE_MODULES):
        forward = module.forward  # no hooks to run: skip nn.Module.__call__
        return lambda s, c, a, k: forward(a[0])
    if isinstance(module, POOLING_MODULES):
        return lambda s, c, a, k: module(a[0].flatten(0, 1)).unflatten(0, a[0].shape[:2])
    if isinstance(module, nn.Flatten):
        start = _shift(module.start_dim, f"module {name!r} (Flatten)")
        end = _shift(module.end_dim, f"module {name!r} (Flatten)")
        return lambda s, c, a, k: a[0].flatten(start, end)
    if isinstance(module, nn.Unflatten) and isinstance(module.dim, int):
        dim, sizes = _shift(module.dim, f"module {name!r} (Unflatten)"), module.unflattened_size
        return lambda s, c, a, k: a[0].unflatten(dim, sizes)
    raise Unstackable(f"module {name!r} ({kind}) is not a layer the population engine stacks")


def _int(value: Any) -> int:
    """An axis given to a node, which must be a constant to be shifted past the model axis."""
    if not isinstance(value, int):
        raise Unstackable(f"an axis computed at run time ({value})")
    return value


def _flatten_op(args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> Op:
    start = _shift(_int(args[1] if len(args) > 1 else kwargs.get("start_dim", 0)), what)
    end = _shift(_int(args[2] if len(args) > 2 else kwargs.get("end_dim", -1)), what)
    return lambda s, c, a, k: a[0].flatten(start, end)


def _function_op(node: fx.Node) -> Op:
    target = node.target
    if target in ELEMENTWISE_FUNCTIONS:
        return lambda s, c, a, k: target(*a, **k)
    if target is torch.flatten:
        return _flatten_op(node.args, node.kwargs, "torch.flatten")
    if target is torch.cat:
        dim = _shift(
            _int(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)), "torch.cat"
        )
        return lambda s, c, a, k: torch.cat(a[0], dim)
    name = getattr(target, "__name__", str(target))
    raise Unstackable(f"the function {name} (node {node.name!r}) is not one the engine stacks")


def _method_op(node: fx.Node) -> Op:
    method = str(node.target)
    if method in ELEMENTWISE_METHODS:
        return lambda s, c, a, k: getattr(a[0], method)(*a[1:], **k)
    if method == "flatten":
        return _flatten_op(node.args, node.kwargs, "Tensor.flatten")
    if method == "transpose" and all(isinstance(d, int) for d in node.args[1:3]):
        first, second = (_shift(_int(d), "Tensor.transpose") for d in node.args[1:3])
        return lambda s, c, a, k: a[0].transpose(first, second)
    hint = (
        " (its sizes depend on the batch: use nn.Flatten)" if method in ("view", "reshape") else ""
    )
    raise Unstackable(
        f"the tensor method {method} (node {node.name!r}) is not one the engine stacks{hint}"
    )


def program(net: nn.Module) -> Program:
    """``net``'s forward pass as a :class:`Program`, or :class:`Unstackable` saying why not."""
    try:
        graph = fx.symbolic_trace(net).graph
    except Exception as exc:  # data-dependent control flow, unsupported Python
        raise Unstackable(f"torch.fx cannot trace it: {type(exc).__name__}: {exc}") from None
    prog = Program()
    for node in graph.nodes:
        if node.op == "placeholder":
            if prog.input is not None:
                raise Unstackable("its forward takes more than one input")
            prog.input = node
        elif node.op == "call_module":
            module = net.get_submodule(str(node.target))
            prog.add(node, _module_op(str(node.target), module, prog))
        elif node.op == "call_function":
            prog.add(node, _function_op(node))
        elif node.op == "call_method":
            prog.add(node, _method_op(node))
        elif node.op == "output":
            prog.output = node.args[0]
        else:
            raise Unstackable(f"node {node.name!r} reads a tensor attribute ({node.target})")
    held = {
        id(p) for name in prog.layers + prog.norms for p in net.get_submodule(name).parameters()
    }
    loose = [name for name, p in net.named_parameters() if id(p) not in held]
    if loose:
        raise Unstackable(f"parameters outside its Linear, Conv and BatchNorm layers: {loose[:3]}")
    if prog.input is None:
        raise Unstackable("its forward takes no input")
    return prog
