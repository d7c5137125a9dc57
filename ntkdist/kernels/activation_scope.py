"""Where ``"custom:NAME"`` is looked up: a scope of custom activations, never the whole process.

A custom activation (`ntkdist.kernels.activations.Custom`) is found by its spec string only inside a scope::

    from ntkdist.kernels.activations import ActivationScope, custom

    with ActivationScope() as scope:          # the current scope of this thread / task (a context variable)
        swish = custom(lambda x: x / (1 + np.exp(-x)), name="swish", non_polynomial=True)   # added to it
        config = Config.from_dict(raw)        # [network] activation = "custom:swish"; the config keeps a copy
    config.net                                 # still swish, wherever it is used later

    scope = ActivationScope([swish])          # or explicitly, without a with block
    config = Config.from_dict(raw, activations=scope)
    get_activation("custom:swish", scope=scope)

Two scopes never see each other's activations, so two configurations built in one process, each with its own
scope, cannot pick up each other's "custom:swish". Outside every scope, custom activations are still usable as
objects (``MLP(activation=swish)``) but no spec string resolves to one. Scopes nest: an inner scope sees the
names of the one it was entered in, and adds to itself only.
"""

from __future__ import annotations

import contextvars

_CURRENT: contextvars.ContextVar["ActivationScope | None"] = contextvars.ContextVar("ntkdist_activation_scope",
                                                                                     default=None)


class ActivationScope:
    """Custom activations by name (``"custom:NAME"``), visible where the scope is current or passed explicitly.

    Parameters
    ----------
    activations : iterable of Custom, optional
        Activations to hold from the start (by their ``name``; a later one replaces an earlier one of that name).
    """

    def __init__(self, activations=()):
        self._by_name: dict = {}
        self._parent: ActivationScope | None = None
        self._tokens: list = []
        for activation in activations:
            self.add(activation)

    # -- contents ----------------------------------------------------------------------------------------------
    def add(self, activation):
        """Hold ``activation`` under its name (replacing one of the same name in this scope); returns it."""
        name = getattr(activation, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"activation: a scope holds custom activations with a name, got {activation!r}")
        self._by_name[name] = activation
        return activation

    def get(self, name: str):
        """The activation called ``name`` here (or in the scope this one was entered in), else None."""
        scope = self
        while scope is not None:
            if name in scope._by_name:
                return scope._by_name[name]
            scope = scope._parent
        return None

    def names(self) -> list[str]:
        """Every name this scope resolves (its own and those of the scopes it was entered in)."""
        found, scope = set(), self
        while scope is not None:
            found.update(scope._by_name)
            scope = scope._parent
        return sorted(found)

    def copy(self) -> "ActivationScope":
        """A detached snapshot: what this scope resolves now, unaffected by later additions."""
        return ActivationScope(self.get(name) for name in self.names())

    def __eq__(self, other) -> bool:
        """Two scopes are equal when every name resolves to the same activation in both."""
        if not isinstance(other, ActivationScope):
            return NotImplemented
        return self.names() == other.names() and all(self.get(n) is other.get(n) for n in self.names())

    __hash__ = None  # mutable

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"ActivationScope({self.names()!r})"

    # -- the current scope -------------------------------------------------------------------------------------
    def __enter__(self) -> "ActivationScope":
        self._parent = _CURRENT.get()
        self._tokens.append(_CURRENT.set(self))
        return self

    def __exit__(self, *exc) -> None:
        _CURRENT.reset(self._tokens.pop())
        self._parent = None


def current_scope() -> ActivationScope | None:
    """The scope entered last in this context (thread, task), or None outside every scope."""
    return _CURRENT.get()
