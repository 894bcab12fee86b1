"""torch.ops.nbops is registered (nbops/library.py) as soon as torch is there, so that a program
exported with nbops' ops loads after `import nbops` alone, in either import order, without nbops
importing torch itself:

- torch already imported: at `import nbops`;
- torch imported later: right after `import torch` finishes, by a one-shot import hook.

A registration that fails (an older torch without torch.library.custom_op, say) warns once and leaves
torch and nbops' own functions working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings


def _register() -> None:
    try:
        importlib.import_module("nbops.library")
    except Exception as exc:  # never break `import torch` or `import nbops`
        warnings.warn(f"nbops: torch.ops.nbops could not be registered: {exc!r}", RuntimeWarning, stacklevel=2)


class _AfterExec(importlib.abc.Loader):
    """torch's own loader, followed by the registration (and the hook's removal)."""

    def __init__(self, loader, hook):
        self.loader, self.hook = loader, hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        if self.hook in sys.meta_path:
            sys.meta_path.remove(self.hook)
        _register()

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _WhenTorchIsImported(importlib.abc.MetaPathFinder):
    """Finds torch with the other finders and wraps its loader; it leaves sys.meta_path once torch has
    been imported (a lookup alone, importlib.util.find_spec("torch"), leaves it in place)."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _AfterExec(spec.loader, self)
                return spec
        return None


def register_when_torch_is_there() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        if hasattr(torch, "library"):  # (not while torch itself is importing nbops)
            _register()
    elif not any(isinstance(finder, _WhenTorchIsImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WhenTorchIsImported())
