"""A static scan for code that could run untrusted data: eval/exec, pickle-style loads, shells, remote code.

The scan reads Python source with ``ast`` (nothing is imported or run) and resolves import aliases, so
``import pickle as p; p.loads(x)`` and ``from yaml import load`` are caught like the plain spellings.
Method calls that merely share a name (``model.eval()``, ``re.compile()``, ``graph.compile()``) are not
the builtins and are not flagged.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Every rule the scan knows, with what it means.
RULES: dict[str, str] = {
    "builtin-eval": "builtin eval/exec/compile/__import__ runs arbitrary code",
    "pickle-load": "pickle-family loads (pickle, cPickle, dill, marshal, shelve) run arbitrary code",
    "torch-load": "torch.load without weights_only=True unpickles arbitrary objects",
    "yaml-load": "yaml.load/unsafe_load/full_load construct arbitrary objects; use yaml.safe_load",
    "shell": "a shell command (shell=True, a string command, os.system, os.popen) can be injected into",
    "numpy-pickle": "numpy.load(allow_pickle=True) unpickles arbitrary objects",
    "pandas-pickle": "pandas.read_pickle unpickles arbitrary objects",
    "remote-code": "trust_remote_code=True runs code downloaded with a model",
    "no-safetensors": "a model checkpoint loaded without use_safetensors=True may unpickle .bin weights",
}

_BUILTINS = {"eval", "exec", "compile", "__import__"}
_PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}
_PICKLE_CALLS = {"load", "loads", "Unpickler", "open"}
_YAML_UNSAFE = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
_SUBPROCESS = {"run", "call", "check_call", "check_output", "Popen"}
_ALWAYS_SHELL = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}
_MODEL_LOADERS = ("AutoModel", "Qwen", "Idefics")  # classes whose from_pretrained reads weight files


@dataclass(frozen=True)
class Finding:
    """One flagged call: where it is, which rule, and the call as written."""

    path: str
    line: int
    rule: str
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.code} ({RULES[self.rule]})"


def _is_true(node: ast.expr | None) -> bool:
    """Anything but a literal False/None counts as enabling a flag: a variable might be True."""
    return node is not None and not (isinstance(node, ast.Constant) and node.value in (False, None, 0))


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _has_splat(call: ast.Call) -> bool:
    """``f(**options)`` may set any keyword: the scan cannot see it, so it treats it as unset."""
    return any(k.arg is None for k in call.keywords)


def _is_stringish(node: ast.expr) -> bool:
    """A command built as a string (literal, f-string, concatenation, % or .format) rather than a list."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _is_stringish(node.left) or _is_stringish(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _is_stringish(node.func.value)
    return False


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, source: str, require_safetensors: bool) -> None:
        self.path = path
        self.source = source
        self.require_safetensors = require_safetensors
        self.aliases: dict[str, str] = {}  # local name -> dotted name it was imported as
        self.findings: list[Finding] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{node.module or ''}.{alias.name}".lstrip(".")

    def _qualified(self, node: ast.expr) -> str | None:
        """The dotted name a call target refers to, through import aliases (None for computed targets)."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self._qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _flag(self, node: ast.AST, rule: str) -> None:
        code = ast.get_source_segment(self.source, node) or ""
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), rule, " ".join(code.split())[:120]))

    def visit_Call(self, node: ast.Call) -> None:
        name = self._qualified(node.func) or ""
        parts = name.split(".")
        module, attr = ".".join(parts[:-1]), parts[-1]
        if name in _BUILTINS or (module == "builtins" and attr in _BUILTINS):
            self._flag(node, "builtin-eval")
        if parts[0] in _PICKLE_MODULES and attr in _PICKLE_CALLS:
            self._flag(node, "pickle-load")
        if name == "torch.load":
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                self._flag(node, "torch-load")
        if parts[0] == "yaml" and attr in _YAML_UNSAFE:
            self._flag(node, "yaml-load")
        if name in _ALWAYS_SHELL or (module == "subprocess" and attr in _SUBPROCESS and self._shell(node)):
            self._flag(node, "shell")
        if parts[0] in ("numpy", "np") and attr == "load" and _is_true(_keyword(node, "allow_pickle")):
            self._flag(node, "numpy-pickle")
        if parts[0] in ("pandas", "pd") and attr == "read_pickle":
            self._flag(node, "pandas-pickle")
        if _is_true(_keyword(node, "trust_remote_code")):
            self._flag(node, "remote-code")
        if self.require_safetensors and self._loads_weights(node, name):
            use = _keyword(node, "use_safetensors")
            if not (isinstance(use, ast.Constant) and use.value is True):
                self._flag(node, "no-safetensors")
        self.generic_visit(node)

    @staticmethod
    def _shell(call: ast.Call) -> bool:
        command = call.args[0] if call.args else _keyword(call, "args")
        return _is_true(_keyword(call, "shell")) or (command is not None and _is_stringish(command))

    @staticmethod
    def _loads_weights(call: ast.Call, name: str) -> bool:
        parts = name.split(".")
        return (
            len(parts) >= 2
            and parts[-1] == "from_pretrained"
            and parts[-2].startswith(_MODEL_LOADERS)
            and not _has_splat(call)
        )


def scan_source(source: str, path: str = "<string>", *, require_safetensors: bool = False) -> list[Finding]:
    """Every finding in one module's source. ``require_safetensors`` also checks model ``from_pretrained`` calls."""
    scanner = _Scanner(path, source, require_safetensors)
    scanner.visit(ast.parse(source, filename=path))
    return scanner.findings


def python_files(root: Path, targets: Iterable[str]) -> Iterator[Path]:
    """The ``.py`` files under each target (a directory or a file) relative to ``root``, sorted."""
    for target in targets:
        path = root / target
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def scan_paths(paths: Iterable[Path], *, root: Path, require_safetensors: bool = False) -> list[Finding]:
    """Every finding in these files, with paths relative to ``root``."""
    findings: list[Finding] = []
    for path in paths:
        where = str(path.relative_to(root))
        findings += scan_source(path.read_text(encoding="utf-8"), where, require_safetensors=require_safetensors)
    return findings
