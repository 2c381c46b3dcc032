"""A new app version's check, in a fresh interpreter: does it import here, and what does it serve?

``python -m edge_server.appcheck`` reads one JSON object on standard input::

    {"root": the unpacked version's directory,
     "path": the server's sys.path (what its workers will see besides root),
     "serve": modules to import, or [] for the default,
     "modules": every module of the bundle, "top": its top-level names}

and prints one JSON object as its last line of output: ``{"ok": true,
"serve": [...], "functions": {wire name: fingerprint hex}}``, or ``{"ok":
false, "kind": ..., "module": ..., "message": ...}`` where ``kind`` is

* ``shadow``: a top-level name of the bundle is already importable on the
  server (the standard library, an installed package, another app on its
  path): the app would replace it for everyone, or never be imported;
* ``missing``: importing the app needs a module neither the bundle nor the
  server has (a third-party dependency not installed): ``module`` names it;
* ``import``: importing it raised something else (the message has the
  traceback's end);
* ``empty``: the served modules define no ``@offload`` function.

The default modules to serve are the bundle's top-level modules and every
other module of it whose source mentions ``offload`` (where ``@offload``
functions can be). Run in its own process, so whatever the app does when
imported happens neither in the server nor in a worker that serves calls.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
from pathlib import Path
from typing import Any


def check(request: dict[str, Any]) -> dict[str, Any]:
    """The check's answer for one request (see the module's docstring)."""
    root = Path(request["root"])
    top: list[str] = request["top"]
    sys.path[:] = [p for p in request["path"] if p != str(root)]
    importlib.invalidate_caches()
    for name in top:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            where = spec.origin or ", ".join(spec.submodule_search_locations or ()) or "?"
            return _refused(
                "shadow",
                name,
                f"the bundle's module {name!r} would shadow the server's own {name!r} ({where}): "
                "rename it",
            )
    sys.path.append(str(root))  # after the server's own: as the workers will have it
    importlib.invalidate_caches()
    serve: list[str] = request["serve"] or _default_serve(root, request["modules"], top)
    from offload.api import find_offloaded  # after the shadow check: offload is the server's

    functions: dict[str, str] = {}
    for module_name in serve:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and missing.split(".")[0] not in top:
                return _refused(
                    "missing",
                    missing,
                    f"missing module {missing!r}: {module_name} imports it and this server "
                    "does not have it (install it on the server, or bundle it)",
                )
            return _refused("import", module_name, _tail(exc))
        except BaseException as exc:  # SystemExit too: the app's import must not end the check
            return _refused("import", module_name, _tail(exc))
        for name, fn in find_offloaded(module).items():
            functions[name] = fn.fingerprint.hex()
    if not functions:
        return _refused(
            "empty", "", f"no @offload function in {', '.join(serve)}: nothing to serve"
        )
    return {"ok": True, "serve": serve, "functions": functions}


def _default_serve(root: Path, modules: list[str], top: list[str]) -> list[str]:
    serve = []
    for module in modules:
        if module in top:
            serve.append(module)
            continue
        base = root.joinpath(*module.split("."))
        for source in (base.with_suffix(".py"), base / "__init__.py"):
            try:
                if b"offload" in source.read_bytes():
                    serve.append(module)
                    break
            except OSError:
                continue
    return serve


def _refused(kind: str, module: str, message: str) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "module": module, "message": message}


def _tail(exc: BaseException, lines: int = 6) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return "\n".join(text[-lines:])[:4000]


def main() -> int:
    """Read the request, print the answer; exit status 0 either way (the answer says)."""
    request = json.loads(sys.stdin.read())
    answer = check(request)
    sys.stdout.flush()
    print("\n" + json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
