"""config.json read field by field: every value is checked for its type and range before a model
is built from it, and the first wrong one raises one ConfigError naming the field.

    fields = Fields(config_json, checkpoint)           # the checkpoint bounds the layer counts
    fields.integer("n_embd")                           # an int ≥ 1 (true and 1.0 are not ints)
    fields.number("layer_norm_epsilon", 1e-5)          # a finite number > 0
    ViTConfig(**fields.of(ViTConfig, layers=("num_hidden_layers",)))   # by the fields' types

A layer count may not exceed the number of tensors in the checkpoint (each layer has some), so
no config builds a million layers; sizes are not bounded here: load_pretrained builds the model
without initialising it, so a hostile width costs address space only until the shapes are
compared with the checkpoint's.
"""
import dataclasses
import math

MISSING = object()


class ConfigError(ValueError):
    """A config value that cannot describe a model; the message names the field."""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Fields:
    """The entries of one JSON object (a config or a section of one, named `prefix`)."""

    def __init__(self, values, checkpoint=(), prefix=""):
        if not isinstance(values, dict):
            raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a JSON object, "
                              f"got {values!r:.100}")
        self.values, self.prefix = values, prefix
        self.most_layers = len(checkpoint)

    def _get(self, name, default):
        value = self.values.get(name, default)
        if value is MISSING:
            raise ConfigError(f"{self.prefix}{name} is missing")
        return value

    def _wrong(self, name, value, expected):
        return ConfigError(f"{self.prefix}{name} must be {expected}, got {value!r:.100}")

    def integer(self, name, default=MISSING, minimum=1, maximum=None):
        value = self._get(name, default)
        if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
            bound = f" and at most {maximum}" if maximum is not None else ""
            raise self._wrong(name, value, f"an integer of at least {minimum}{bound}")
        return value

    def layers(self, name, default=MISSING):
        """A layer count: at most the number of tensors in the checkpoint."""
        return self.integer(name, default, maximum=max(self.most_layers, 1))

    def optional_integer(self, name, default=None, minimum=1):
        return None if self._get(name, default) is None else self.integer(name, minimum=minimum)

    def token_ids(self, name, default=None):
        """A token id (an integer ≥ 0), a non-empty list of them, or None."""
        value = self._get(name, default)
        ids = value if isinstance(value, list) and value else [value]
        if value is not None and not all(_is_int(i) and i >= 0 for i in ids):
            raise self._wrong(name, value, "a token id (an integer of at least 0), a list of "
                                           "them or null")
        return value

    def integers(self, name, default=MISSING, maximum=None, minimum=1):
        """A non-empty list of integers ≥ minimum (as a tuple), their sum at most `maximum`."""
        value = self._get(name, default)
        if not isinstance(value, (list, tuple)) or not value \
                or not all(_is_int(v) and v >= minimum for v in value) \
                or (maximum is not None and sum(value) > maximum):
            bound = f" adding up to at most {maximum}" if maximum is not None else ""
            raise self._wrong(name, value, f"a list of integers of at least {minimum}{bound}")
        return tuple(value)

    def number(self, name, default=MISSING, minimum=0.0, maximum=math.inf, closed=False):
        """A finite number above `minimum` (or equal to it, when `closed`) and below `maximum`."""
        value = self._get(name, default)
        if not _is_number(value) or not (value >= minimum if closed else value > minimum) \
                or not value < maximum:
            limits = f"{'at least' if closed else 'above'} {minimum}"
            limits += f" and below {maximum}" if maximum < math.inf else ""
            raise self._wrong(name, value, f"a finite number {limits}")
        return value

    def boolean(self, name, default=MISSING):
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self._wrong(name, value, "true or false")
        return value

    def choice(self, name, default, choices):
        value = self._get(name, default)
        if not isinstance(value, str) or value not in choices:
            raise self._wrong(name, value, f"one of {', '.join(map(repr, choices))}")
        return value

    def string(self, name, default=MISSING):
        value = self._get(name, default)
        if not isinstance(value, str):
            raise self._wrong(name, value, "a string")
        return value

    def section(self, *names, defaults=None):
        """The nested objects `names` merged, a later one's entries over an earlier's (as
        transformers reads text_config, then text_config_dict), over `defaults`, as Fields."""
        merged = dict(defaults or {})
        for name in names:
            if self.values.get(name) is not None:
                merged.update(Fields(self.values[name], prefix=f"{self.prefix}{name}.").values)
        section = Fields(merged, prefix=f"{self.prefix}{names[0]}.")
        section.most_layers = self.most_layers
        return section

    def of(self, config_class, layers=()):
        """{field: value} for the fields of the dataclass `config_class` that the config holds,
        each checked by its type: int ≥ 1 (≥ 0 for num_classes; a layer count by `layers`),
        int | None (≥ 0 for a token id), int | list | None (token ids), float (in [0, 1) for a
        dropout, else > 0), bool, str, tuple (of integers ≥ 1, ≥ 0 for Swin-V2's
        pretrained_window_sizes, adding up to a layer count by `layers`); an int | tuple field
        is either."""
        checked = {}
        for field in dataclasses.fields(config_class):
            if field.name in self.values:
                checked[field.name] = self._by_type(field.name, field.type, field.name in layers)
            elif field.default is field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{self.prefix}{field.name} is missing")
        return checked

    def _by_type(self, name, kind, is_layers):
        value = self.values[name]
        if kind is int:
            return self.layers(name) if is_layers else \
                self.integer(name, minimum=0 if name == "num_classes" else 1)
        if kind == int | None:
            return self.optional_integer(name, minimum=0 if name.endswith("_token_id") else 1)
        if kind == int | list | None:
            return self.token_ids(name)
        if kind is float:
            return self.number(name, maximum=1.0, closed=True) if "dropout" in name \
                else self.number(name)
        if kind is bool:
            return self.boolean(name)
        if kind is str:
            return self.string(name)
        if kind == int | tuple and _is_int(value):
            return self.layers(name) if is_layers else self.integer(name)
        if kind in (tuple, int | tuple):
            return self.integers(name, maximum=self.most_layers if is_layers else None,
                                 minimum=0 if name == "pretrained_window_sizes" else 1)
        return value
