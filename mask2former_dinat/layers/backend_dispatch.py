"""Which backend (kernel) serves a call of an op, and why: the one protocol of this package's ops.

An op with several kernels (neighborhood attention, multi-scale deformable attention) lists
its backends in one ordered tuple and hands it to a `BackendDispatcher`. Every backend is a
module with:
  NAME                          the name that forces it ("torch", "flex", ...)
  availability() -> (ok, why)   whether it can run in this environment at all (for reports)
  unsupported(*call, automatic=False) -> why not, or None
                                whether it can serve a call; `call` is the op's own tuple of
                                deciding arguments. With automatic=True it may also decline
                                calls it could serve but should not be picked for (an unfused
                                fallback); forcing it still runs them.
  the op itself                 same name and arguments in every backend of an op.

"auto" asks the backends in their listed order and the first without objection serves the
call, so adding a backend is one line in that tuple. A backend is forced, first to last, by
the dispatcher's `force()` context manager, the caller's `backend` argument (a config key),
or the environment variable; "auto" (or nothing) at every level means the ordered choice.
While a graph is being exported (torch.onnx.export, torch.export), a dispatcher given an
`export_backend` picks that one for every call, whatever was asked: the other kernels use
Python control flow, in-place scatters or compiled code that exporters cannot record.
"""
import contextlib
import os
import threading
from typing import Optional, Protocol, Sequence, Tuple

__all__ = ["Backend", "BackendDispatcher", "exporting"]


def exporting() -> bool:
    """Whether torch.onnx.export or torch.export is recording a graph right now."""
    import torch

    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


class Backend(Protocol):
    NAME: str

    def availability(self) -> Tuple[bool, str]: ...

    def unsupported(self, *call, automatic: bool = False) -> Optional[str]: ...


class BackendDispatcher:
    """Picks the backend of each call of one op.

    op: the op's name in messages; env_var: the variable that forces a backend; backends: in
    the order "auto" asks them, the last one serving every call; context: how users spell the
    op's `force` context manager, for messages; export_backend: the backend every call gets while
    a graph is exported (None: the usual choice applies then too).
    """

    def __init__(self, op: str, env_var: str, backends: Sequence[Backend], context: str,
                 export_backend: Optional[str] = None):
        self.op = op
        self.export_backend = export_backend
        self.env_var = env_var
        self.backends = tuple(backends)
        self.context = context
        self._state = threading.local()

    @property
    def choices(self) -> Tuple[str, ...]:
        return ("auto",) + tuple(b.NAME for b in self.backends)

    def backend(self, name: str) -> Backend:
        return next(b for b in self.backends if b.NAME == name)

    def check_choice(self, name: Optional[str], where: str) -> Optional[str]:
        """The normalised backend name (None stays None); ValueError naming `where` if unknown."""
        if name is None:
            return None
        name = str(name).strip().lower()
        if name not in self.choices:
            raise ValueError(f"unknown {self.op} backend {name!r} from {where}; choose one of {self.choices}")
        return name

    @contextlib.contextmanager
    def force(self, name: str):
        """Force the backend of every call inside the block ("auto" restores the ordered choice)."""
        name = self.check_choice(name, self.context)
        previous = getattr(self._state, "forced", None)
        self._state.forced = name
        try:
            yield
        finally:
            self._state.forced = previous

    def requested(self, backend: Optional[str] = None) -> Tuple[str, str]:
        """(requested name, who asked for it); ("auto", "default") when nobody did."""
        forced = getattr(self._state, "forced", None)
        if forced not in (None, "auto"):
            return forced, f"{self.context} context"
        backend = self.check_choice(backend, "the backend argument")
        if backend not in (None, "auto"):
            return backend, "backend argument"
        env = self.check_choice(os.environ.get(self.env_var) or None, f"${self.env_var}")
        if env not in (None, "auto"):
            return env, f"${self.env_var}={env}"
        return "auto", "default"

    def auto(self, *call) -> Tuple[str, str]:
        """(the first backend that serves `call`, why the earlier ones did not)."""
        declined = []
        for backend in self.backends:
            problem = backend.unsupported(*call, automatic=True)
            if problem is None:
                order = ", ".join(b.NAME for b in self.backends)
                return backend.NAME, "; ".join([f"first of {order} to serve this call"] + declined)
            declined.append(f"{backend.NAME}: {problem}")
        raise RuntimeError(f"no {self.op} backend serves this call ({'; '.join(declined)})")

    def select(self, *call, backend: Optional[str] = None) -> Tuple[str, str]:
        """(backend name, why) for `call`; ValueError if a forced backend cannot serve it."""
        if self.export_backend is not None and exporting():
            problem = self.backend(self.export_backend).unsupported(*call)
            if problem is not None:
                raise ValueError(f"{self.op} cannot be exported for this call: {problem}")
            return self.export_backend, "exporting a graph: the backend exporters can record"
        name, source = self.requested(backend)
        if name == "auto":
            return self.auto(*call)
        problem = self.backend(name).unsupported(*call)
        if problem is not None:
            raise ValueError(
                f"{self.op} backend {name!r} (forced by {source}) cannot serve this call: {problem}. "
                f"Use backend {self.backends[-1].NAME!r} or 'auto' instead."
            )
        return name, f"forced by {source}"

    def describe(self, examples: Sequence[Tuple[str, tuple]] = ()) -> str:
        """For bug reports: each backend's availability, the request, and what auto picks for
        each (label, call) of `examples`."""
        lines = [f"{self.op} backends:"]
        for b in self.backends:
            ok, why = b.availability()
            lines.append(f"  {b.NAME:8s} {'available' if ok else 'unavailable'}: {why}")
        lines.append("  requested: {} ({})".format(*self.requested()))
        lines += ["  auto on {}: {} ({})".format(label, *self.auto(*call)) for label, call in examples]
        return "\n".join(lines)
