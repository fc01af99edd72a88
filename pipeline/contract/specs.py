"""One ModelSpec per model family: how to build it, its config, the input it takes.

A family is found by name (`model.family`) in `SPECS`. The built-in families
wrap the plain modules of `models/`; `custom` builds the user's own nn.Module
named by `model.module: "my_pkg.nets:MyNet"`. Every network is constructed
from one plain dict (saved with the model as JSON), so the served model
rebuilds it with `build_network(family, config)`.

The sizes the data decides are passed as keyword arguments named per input kind
(`DERIVED_ARGS`); the network takes the prepared float32 input of shape
(rows, in_features) (an image row-major height x width x channels) and returns
the task's raw outputs, (rows, out_features). A sequence network instead takes
`(x, mask)`: `SequenceInput` wraps it and turns the prepared row (the padded series,
then its length) into x (rows, length, channels) and the padding mask.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from models.autoencoder import Autoencoder, AutoencoderConfig
from models.cnn import CNN, CNNConfig
from models.fcn import FCN, FCNConfig
from models.mlp import MLP, MLPConfig
from models.rnn import RNN, RNNConfig
from models.seq_autoencoder import SeqAutoencoder, SeqAutoencoderConfig
from models.transformer import SequenceTransformer, TransformerConfig
from pipeline.contract.preprocess import Preprocessor
from pipeline.contract.tasks import task_named
from pipeline.errors import ConfigError

InputKind = Literal["tabular", "image", "sequence"]

# The keyword arguments the service derives from the data, per input kind.
DERIVED_ARGS: dict[str, tuple[str, ...]] = {
    "tabular": ("in_features", "out_features"),
    "image": ("height", "width", "in_channels", "out_features"),
    "sequence": ("seq_len", "in_features", "out_features"),
}


@dataclass(frozen=True, kw_only=True)
class DataShape:
    """What the fitted data says about a network's input and output."""

    pre: Preprocessor
    out_features: int
    image_size: int
    image_channels: int


def derived_args(kind: str, shape: DataShape, who: str) -> dict[str, int]:
    """The data-derived constructor arguments of a network (`who`, for messages) taking
    `kind` input."""
    pre = shape.pre
    if kind == "tabular":
        return {"in_features": pre.width, "out_features": shape.out_features}
    if kind == "image":
        size, channels = shape.image_size, shape.image_channels
        arrays = [f for f in pre.features if f.kind == "array"]
        if len(pre.features) != 1 or not arrays or arrays[0].size != size * size * channels:
            raise ConfigError(
                f"{who} takes exactly one image feature: an array column of "
                f"data.image_size^2 * data.image_channels = {size * size * channels} values; got "
                f"{[(f.name, f.kind, f.width) for f in pre.features]}. Fix data.features or the "
                "image size, or use a tabular model (model.family=mlp)"
            )
        return {
            "height": size,
            "width": size,
            "in_channels": channels,
            "out_features": shape.out_features,
        }
    if kind == "sequence":
        kinds = [f.kind for f in pre.features]
        if kinds != ["sequence", "length"]:
            raise ConfigError(
                f"{who} takes sequences: data.features must be [<series>, <length>] (the "
                "columns data.sequence.column and data.sequence.length_column of a table "
                "ingested with data.format=ts, in that order); got "
                f"{[(f.name, f.kind) for f in pre.features]}. For tabular data use a tabular "
                "family (model.family=mlp)"
            )
        series = pre.features[0]
        return {
            "seq_len": series.size // series.channels,
            "in_features": series.channels,
            "out_features": shape.out_features,
        }
    raise ConfigError(f"{who}: unknown input kind '{kind}'; use tabular, image or sequence")


class SequenceInput(nn.Module):
    """The prepared input of a sequence, (rows, max_length * channels + 1): the padded
    series then its length, turned into what a sequence network takes: `x` (rows,
    max_length, channels) and `mask` (rows, max_length), True at padding.

    For a task that reconstructs its input (anomaly detection) the network returns a
    series shaped like `x`; its padding is set to the input's (zero) and the length
    appended, so the task's error per row counts only the steps that are there.
    """

    def __init__(
        self, net: nn.Module, seq_len: int, channels: int, reconstruct: bool, who: str
    ) -> None:
        super().__init__()
        self.net = net
        self.seq_len, self.channels, self.reconstruct, self.who = (
            seq_len,
            channels,
            reconstruct,
            who,
        )

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        width = self.seq_len * self.channels
        x = flat[:, :width].reshape(len(flat), self.seq_len, self.channels)
        length = flat[:, width].round().long().clamp(1, self.seq_len)
        mask = torch.arange(self.seq_len, device=flat.device)[None, :] >= length[:, None]
        # Ingest pads with zeros; rows scored from elsewhere get the same guarantee.
        x = x.masked_fill(mask.unsqueeze(-1), 0.0)
        try:
            out = self.net(x, mask)
        except Exception as exc:
            raise ConfigError(
                f"{self.who}: forward(x, mask) failed on x of shape {tuple(x.shape)} (batch, "
                f"length, channels) and mask of shape {tuple(mask.shape)} (bool, True at "
                f"padding): {type(exc).__name__}: {exc}. A sequence network takes these two "
                "arguments (see README 'Your own model')"
            ) from exc
        if not self.reconstruct:
            return out
        if tuple(out.shape) != tuple(x.shape):
            raise ConfigError(
                f"{self.who} reconstructs its input for this task, so it must return a series "
                f"shaped like x {tuple(x.shape)}; got {tuple(out.shape)}"
            )
        out = out.masked_fill(mask.unsqueeze(-1), 0.0)
        return torch.cat([out.reshape(len(flat), width), flat[:, width:]], dim=1)


def sequence_sizes(task: str, derived: Mapping[str, int]) -> tuple[dict[str, int], dict[str, Any]]:
    """A sequence network's constructor sizes (a reconstructing task's output has the input's
    channels) and the SequenceInput around it."""
    reconstruct = task_named(task).reconstructs
    sizes = dict(derived)
    if reconstruct:
        sizes["out_features"] = sizes["in_features"]
    wrap = {
        "seq_len": derived["seq_len"],
        "channels": derived["in_features"],
        "reconstruct": reconstruct,
    }
    return sizes, wrap


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A built-in family: its module, config dataclass, input kind and the tasks it fits."""

    family: str
    module: type[nn.Module]
    config: type[Any]
    input_kind: InputKind
    tasks: tuple[str, ...]
    # model.* knobs (hidden, dropout, ...) -> config fields besides the derived sizes
    knobs: Callable[[Mapping[str, Any]], dict[str, Any]]

    def kind(self, knobs: Mapping[str, Any]) -> str:
        return self.input_kind

    def network_config(
        self, task: str, derived: Mapping[str, int], knobs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The saved config of a network for `task`: derived sizes plus the family's knobs."""
        if task not in self.tasks:
            fits = sorted(s.family for s in SPECS.values() if task in s.tasks)
            raise ConfigError(
                f"model.family={self.family} does not fit data.task={task}; for {task} use "
                f"model.family={' or '.join(fits)}"
            )
        fields = set(inspect.signature(self.config).parameters)
        sizes = {k: v for k, v in derived.items() if k in fields}
        return {**sizes, **self.knobs(knobs)}

    def build(self, config: Mapping[str, Any]) -> nn.Module:
        try:
            cfg = self.config(**config)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid sizes for a {self.family} model: {exc}") from exc
        return self.module(cfg)

    def describe(self, config: Mapping[str, Any]) -> str:
        return f"model.family={self.family}"


class SequenceSpec(ModelSpec):
    """A built-in sequence family: its network is saved as {"net": sizes and knobs,
    "sequence": the SequenceInput's}."""

    def network_config(
        self, task: str, derived: Mapping[str, int], knobs: Mapping[str, Any]
    ) -> dict[str, Any]:
        sizes, wrap = sequence_sizes(task, derived)
        return {"net": super().network_config(task, sizes, knobs), "sequence": wrap}

    def build(self, config: Mapping[str, Any]) -> nn.Module:
        net = super().build(config["net"])
        return SequenceInput(net, **config["sequence"], who=self.describe(config))


def import_object(ref: str, key: str) -> Any:
    """The object named "package.module:name" (config key `key`), or an error with the fix."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}='{ref}' must look like 'my_pkg.nets:MyNet' (module:name)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"{key}='{ref}': importing '{module_name}' failed ({type(exc).__name__}: {exc}). "
            "Install the package, or put its directory on PYTHONPATH (Spark executors: "
            "spark-submit --py-files my_pkg.zip)"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ConfigError(
            f"{key}='{ref}': module '{module_name}' has no '{attr}' (it defines: "
            f"{', '.join(public)}); fix the name after ':'"
        ) from exc


class CustomSpec(ModelSpec):
    """The user's own nn.Module: `model.module` names its class, `model.kwargs` adds
    constructor arguments to the derived sizes, `model.input` says the input kind."""

    def kind(self, knobs: Mapping[str, Any]) -> str:
        return str(knobs["input"])

    def network_config(
        self, task: str, derived: Mapping[str, int], knobs: Mapping[str, Any]
    ) -> dict[str, Any]:
        if not knobs.get("module"):
            raise ConfigError(
                "model.family=custom needs model.module, the class of your nn.Module, "
                "e.g. model.module=my_pkg.nets:MyNet"
            )
        clash = sorted(set(derived) & set(knobs.get("kwargs") or {}))
        if clash:
            raise ConfigError(
                f"model.kwargs sets {clash}, which the service derives from the data; "
                "remove them from model.kwargs"
            )
        if self.kind(knobs) == "sequence":
            sizes, wrap = sequence_sizes(task, derived)
            kwargs = {**sizes, **(knobs.get("kwargs") or {})}
            return {"module": knobs["module"], "kwargs": kwargs, "sequence": wrap}
        return {"module": knobs["module"], "kwargs": {**derived, **(knobs.get("kwargs") or {})}}

    def build(self, config: Mapping[str, Any]) -> nn.Module:
        ref, kwargs = config["module"], dict(config["kwargs"])
        cls = import_object(ref, "model.module")
        if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
            raise ConfigError(
                f"model.module='{ref}' is {cls!r}, not a subclass of torch.nn.Module; point "
                "model.module at your network class"
            )
        try:
            inspect.signature(cls).bind(**kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"model.module='{ref}' cannot be constructed with {sorted(kwargs)} ({exc}). "
                f"Its constructor takes {inspect.signature(cls)}; it must accept the derived "
                "sizes as keyword arguments (see README 'Your own model') and model.kwargs "
                "must name only its other parameters"
            ) from exc
        if "sequence" in config:
            return SequenceInput(cls(**kwargs), **config["sequence"], who=self.describe(config))
        return cls(**kwargs)

    def describe(self, config: Mapping[str, Any]) -> str:
        return f"model.module={config['module']}"


SPECS: dict[str, ModelSpec] = {
    spec.family: spec
    for spec in (
        ModelSpec(
            family="mlp",
            module=MLP,
            config=MLPConfig,
            input_kind="tabular",
            tasks=("classification", "regression"),
            knobs=lambda m: {"hidden": m["hidden"], "dropout": m["dropout"]},
        ),
        ModelSpec(
            family="cnn",
            module=CNN,
            config=CNNConfig,
            input_kind="image",
            tasks=("classification", "regression"),
            knobs=lambda m: {
                "channels": m["channels"],
                "hidden": m["hidden"][0] if m["hidden"] else 64,
                "dropout": m["dropout"],
            },
        ),
        ModelSpec(
            family="autoencoder",
            module=Autoencoder,
            config=AutoencoderConfig,
            input_kind="tabular",
            tasks=("anomaly",),
            knobs=lambda m: {"hidden": m["hidden"], "latent": m["latent"]},
        ),
        SequenceSpec(
            family="fcn",
            module=FCN,
            config=FCNConfig,
            input_kind="sequence",
            tasks=("classification", "regression"),
            knobs=lambda m: {"channels": m["channels"], "dropout": m["dropout"]},
        ),
        SequenceSpec(
            family="resnet",
            module=FCN,
            config=FCNConfig,
            input_kind="sequence",
            tasks=("classification", "regression"),
            knobs=lambda m: {"channels": m["channels"], "dropout": m["dropout"], "residual": True},
        ),
        *(
            SequenceSpec(
                family=cell,
                module=RNN,
                config=RNNConfig,
                input_kind="sequence",
                tasks=("classification", "regression"),
                knobs=lambda m, cell=cell: {  # type: ignore[misc]
                    "cell": cell,
                    "hidden": m["hidden"][0] if m["hidden"] else 64,
                    "layers": m["layers"],
                    "bidirectional": m["bidirectional"],
                    "dropout": m["dropout"],
                    "patch": m["patch"],
                },
            )
            for cell in ("lstm", "gru")
        ),
        SequenceSpec(
            family="transformer",
            module=SequenceTransformer,
            config=TransformerConfig,
            input_kind="sequence",
            tasks=("classification", "regression"),
            knobs=lambda m: {
                "d_model": m["hidden"][0] if m["hidden"] else 64,
                "heads": m["heads"],
                "layers": m["layers"],
                "dropout": m["dropout"],
                "patch": m["patch"],
            },
        ),
        SequenceSpec(
            family="seq_autoencoder",
            module=SeqAutoencoder,
            config=SeqAutoencoderConfig,
            input_kind="sequence",
            tasks=("anomaly",),
            knobs=lambda m: {"channels": m["channels"], "latent": m["latent"]},
        ),
        CustomSpec(
            family="custom",
            module=nn.Module,
            config=dict,
            input_kind="tabular",
            tasks=("classification", "regression", "anomaly"),
            knobs=lambda m: {},
        ),
    )
}


def spec_named(family: str) -> ModelSpec:
    if family not in SPECS:
        raise ConfigError(
            f"unknown model family '{family}'; set model.family to one of {sorted(SPECS)}"
        )
    return SPECS[family]


def build_network(family: str, config: Mapping[str, Any]) -> nn.Module:
    """The untrained network of `family` from its saved config."""
    return spec_named(family).build(config)


def check_output(
    network: nn.Module, family: str, config: Mapping[str, Any], in_features: int, expected: int
) -> None:
    """Run two zero rows through the network: its output must be (2, expected)."""
    where = spec_named(family).describe(config)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            out = network(torch.zeros(2, in_features))
    except Exception as exc:
        raise ConfigError(
            f"{where}: forward failed on a batch of shape (2, {in_features}) "
            f"({type(exc).__name__}: {exc}); forward must take the prepared input "
            "(rows, in_features)"
        ) from exc
    finally:
        network.train(was_training)
    actual = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if actual != (2, expected):
        raise ConfigError(
            f"{where} returned an output of shape {actual} for an input of shape "
            f"(2, {in_features}); expected (2, {expected}), one row of out_features values per "
            "input row. Fix the network's last layer or its forward"
        )


def user_code_path(ref: str) -> Path | None:
    """The directory of the top-level package (or the single module file) `ref` lives in,
    to ship with the model; None for built-in families."""
    top = ref.partition(":")[0].split(".")[0]
    module = importlib.import_module(top)
    locations = list(getattr(module, "__path__", []) or [])
    if locations:
        return Path(locations[0])
    return Path(str(module.__file__)) if module.__file__ else None
