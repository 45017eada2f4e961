"""llama.cpp's own HF -> GGUF converter (``convert_hf_to_gguf.py``), found and driven, not copied.

The converter that matches the compiled llama.cpp ships in the llama-cpp-python sdist
(``vendor/llama.cpp``). It is looked for in, in order: the env ``TUNELOOP_LLAMA_CPP_CONVERTER``
(the ``llama.cpp`` folder, or its ``convert_hf_to_gguf.py``), then the converter unpacked for the
installed llama-cpp-python version in the user cache (``~/.cache/tuneloop/llama-cpp-python/<v>``).
``setup_converter`` puts it there (``tuneloop export setup-converter``, run by ``./dev.sh setup``):
from a local sdist, else one ``pip download`` fetches; ``unpack_converter`` takes only the
converter's files out of it.

What is read from it without running a conversion (plain text / ``ast``, no torch import):
- the HF architecture names it converts (``TEXT_MODEL_MAP`` in ``conversion/__init__.py``);
- its pre-tokenizer fingerprints: it encodes a fixed text with the model's tokenizer, hashes the
  ids and maps known hashes to llama.cpp pre-tokenizer names. ``pre_tokenizer_by_hash`` does the
  same from the text and hashes found in its source, so our own writer names ``smollm`` etc. the
  way the reference does.

``convert`` runs it as a subprocess. A tokenizer whose hash it does not know (e.g. one trained by
the user, like the demo's) makes it stop; ``fallback_pre`` names the pre-tokenizer tuneloop
detected from the tokenizer.json regex and is used only in that case.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ENV = "TUNELOOP_LLAMA_CPP_CONVERTER"
SCRIPT = "convert_hf_to_gguf.py"
SOURCE_RECORD = "tuneloop-source.json"  # which sdist a cached converter came from


class ConverterError(RuntimeError):
    """The reference converter is missing or failed; the message says what to do."""


def _installed_llama_cpp_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuneloop"


def converter_cache() -> Path:
    """Where unpacked converters live, one folder per llama-cpp-python version."""
    return cache_dir() / "llama-cpp-python"


def _as_root(path: Path) -> Path | None:
    """The llama.cpp folder holding convert_hf_to_gguf.py, conversion/ and gguf-py/, or None."""
    if path.is_file() and path.name == SCRIPT:
        path = path.parent
    for root in (path, path / "vendor" / "llama.cpp"):
        if (root / SCRIPT).is_file() and (root / "gguf-py").is_dir():
            return root
    return None


def find_converter() -> Path | None:
    """The llama.cpp folder of the reference converter, or None where none is set up."""
    env = os.environ.get(ENV)
    if env:
        root = _as_root(Path(env).expanduser())
        if root is None:
            raise ConverterError(f"{ENV}={env}: no {SCRIPT} with a gguf-py/ folder beside it there; "
                                 "point it at the llama.cpp folder of an unpacked llama-cpp-python "
                                 "sdist (vendor/llama.cpp), or unset it and run "
                                 "`tuneloop export setup-converter`.")
        return root
    ver = _installed_llama_cpp_version()
    if ver:
        return _as_root(converter_cache() / ver)
    return None


def converter_version(root: Path) -> str | None:
    """The llama-cpp-python version a converter folder was unpacked from (its source record)."""
    meta = root / SOURCE_RECORD
    if meta.is_file():
        return json.loads(meta.read_text(encoding="utf-8")).get("version")
    return None


# What of the sdist's vendor/llama.cpp the converter needs: the script, the model classes it
# imports, the gguf-py writer it runs on (newer than the pip `gguf` release) and the licence.
_WANTED_FILES = (SCRIPT, "LICENSE")
_WANTED_DIRS = ("conversion", "gguf-py")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _wanted(rel: str) -> bool:
    return rel in _WANTED_FILES or rel.split("/", 1)[0] in _WANTED_DIRS


def unpack_converter(tarball: str | Path, target: str | Path, version: str) -> Path:
    """Extract only vendor/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/, LICENSE} of a
    llama-cpp-python sdist into ``target`` (made whole or not at all) and return it.

    The files go into a temporary sibling folder that is renamed into place at the end, so a
    half-unpacked converter is never found. Members with absolute paths or ``..`` parts, and
    links, are refused in words: an sdist is downloaded from the network and not trusted.
    """
    import shutil
    import tarfile

    tarball, target = Path(tarball), Path(target)
    if _as_root(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    count = 0
    try:
        try:
            tar = tarfile.open(tarball, "r:gz")
        except (tarfile.TarError, OSError) as exc:
            raise ConverterError(f"{tarball}: not a readable .tar.gz sdist ({exc}).") from None
        with tar:
            for member in tar:
                parts = member.name.replace("\\", "/").split("/")
                if member.name.startswith("/") or ".." in parts:
                    raise ConverterError(f"{tarball.name}: member {member.name!r} points outside "
                                         "the archive; refusing to unpack it.")
                # <sdist-name>/vendor/llama.cpp/<rel>
                if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
                    continue
                rel = "/".join(p for p in parts[3:] if p not in ("", "."))
                if not rel or not _wanted(rel):
                    continue
                if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
                    raise ConverterError(f"{tarball.name}: {member.name!r} is a link or a special "
                                         "file; the converter is plain files, refusing it.")
                out = tmp / rel
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with source, out.open("wb") as f:
                    shutil.copyfileobj(source, f)
                count += 1
        if _as_root(tmp) is None:
            raise ConverterError(f"{tarball.name}: no vendor/llama.cpp/{SCRIPT} with a gguf-py/ "
                                 "folder inside; is this a llama-cpp-python sdist?")
        (tmp / SOURCE_RECORD).write_text(json.dumps({
            "sdist": tarball.name, "version": version, "sha256": _sha256(tarball),
            "files": count}, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # an incomplete folder from elsewhere: replaced, not merged into
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:  # another process unpacked the same version first
            if _as_root(target) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sdist_version(tarball: Path) -> str | None:
    found = re.fullmatch(r"llama[_-]cpp[_-]python-(.+)\.tar\.gz", tarball.name)
    return found.group(1) if found else None


def download_sdist(version: str, folder: Path, timeout: float = 900) -> Path:
    """``pip download`` the llama-cpp-python sdist of ``version`` into ``folder``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={version}", "-d", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ConverterError(f"pip download of the llama-cpp-python {version} sdist took over "
                             f"{timeout:.0f} s; pass a local sdist with --sdist.") from None
    tars = sorted(folder.glob("*.tar.gz"))
    if done.returncode or not tars:
        tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
        raise ConverterError(f"pip could not download the llama-cpp-python {version} sdist "
                             f"(offline?): {' | '.join(tail)}; pass a local sdist with --sdist.")
    return tars[0]


def setup_converter(dest: str | Path | None = None, sdist: str | Path | None = None) -> Path:
    """Unpack the converter of the installed llama-cpp-python into ``dest/<version>`` (default:
    the user cache) from ``sdist`` or, without one, from an sdist pip downloads; returns the
    llama.cpp folder. Already unpacked: returned as it is, nothing downloaded."""
    import tempfile

    ver = _installed_llama_cpp_version()
    if not ver:
        raise ConverterError("llama-cpp-python is not installed; install it first "
                             "(./dev.sh setup).")
    target = Path(dest or converter_cache()) / ver
    if _as_root(target):
        return target
    if sdist is not None:
        sdist = Path(sdist).expanduser()
        if not sdist.is_file():
            raise ConverterError(f"{sdist}: no such sdist file.")
        named = _sdist_version(sdist)
        if named and named != ver:
            raise ConverterError(f"{sdist.name} is llama-cpp-python {named} but {ver} is "
                                 "installed; the converter must match the compiled llama.cpp, "
                                 f"so use llama_cpp_python-{ver}.tar.gz.")
        return unpack_converter(sdist, target, ver)
    with tempfile.TemporaryDirectory() as tmp:
        return unpack_converter(download_sdist(ver, Path(tmp)), target, ver)


@lru_cache(maxsize=8)
def supported_architectures(root: Path) -> frozenset[str]:
    """HF class names the converter registers for text models, read from its source."""
    tree = ast.parse((root / "conversion" / "__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value is not None:
            return frozenset(ast.literal_eval(node.value))
    names = set()  # older layouts: @ModelBase.register("A", "B") decorators
    for file in [root / SCRIPT, *sorted((root / "conversion").glob("*.py"))]:
        for args in re.findall(r"@ModelBase\.register\(([^)]*)\)", file.read_text(encoding="utf-8")):
            names.update(re.findall(r"\"([A-Za-z0-9_]+)\"", args))
    return frozenset(names)


@lru_cache(maxsize=8)
def _fingerprints(root: Path) -> tuple[str, dict[str, str]]:
    """(the text it encodes, hash -> llama.cpp pre-tokenizer name) from the converter source."""
    source = next((f for f in [root / "conversion" / "base.py", root / SCRIPT]
                   if "def get_vocab_base_pre" in f.read_text(encoding="utf-8")), None)
    if source is None:
        raise ConverterError(f"{root}: no get_vocab_base_pre in the converter source.")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
              and n.name == "get_vocab_base_pre")
    text, table = None, {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "chktxt":
            text = ast.literal_eval(node.value)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) \
                and getattr(node.test.left, "id", None) == "chkhsh":
            res = next((s.value for s in node.body if isinstance(s, ast.Assign)
                        and getattr(s.targets[0], "id", None) == "res"), None)
            if res is not None:
                table[ast.literal_eval(node.test.comparators[0])] = ast.literal_eval(res)
    if text is None:
        raise ConverterError(f"{source}: the fingerprint text (chktxt) was not found.")
    return text, table


def pre_tokenizer_by_hash(tokenizer_file: Path, root: Path | None = None) -> str | None:
    """The name the reference converter gives this tokenizer's pre-tokenizer, or None."""
    root = root or find_converter()
    if root is None:
        return None
    from tokenizers import Tokenizer

    text, table = _fingerprints(root)
    ids = Tokenizer.from_file(str(tokenizer_file)).encode(text).ids
    return table.get(hashlib.sha256(str(ids).encode()).hexdigest())


# Run inside the converter's interpreter: where its hash table does not know the tokenizer, use
# the pre-tokenizer tuneloop detected (passed in the env) instead of stopping.
_DRIVER = """
import os, runpy, sys
root = sys.argv.pop(1)
sys.path[:0] = [root, os.path.join(root, "gguf-py")]
from conversion.base import TextModel
_orig = TextModel.get_vocab_base_pre
def _pre(self, tokenizer):
    try:
        return _orig(self, tokenizer)
    except NotImplementedError:
        fallback = os.environ.get("TUNELOOP_FALLBACK_PRE")
        if not fallback:
            raise
        return fallback
TextModel.get_vocab_base_pre = _pre
sys.argv[0] = os.path.join(root, "convert_hf_to_gguf.py")
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert(model_dir: str | Path, out_path: str | Path, outtype: str = "f16",
            root: Path | None = None, fallback_pre: str | None = None, timeout: float = 3600) -> dict:
    """Run the reference converter on a HF folder; refuses an architecture it does not convert."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    root = root or find_converter()
    if root is None:
        raise ConverterError(f"no llama.cpp reference converter set up; set {ENV} to the llama.cpp "
                             "folder of an unpacked llama-cpp-python sdist.")
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = (cfg.get("architectures") or ["?"])[0]
    if arch not in supported_architectures(root):
        raise ConverterError(f"{model_dir}: architecture {arch} is not one the installed llama.cpp "
                             "converts, so it cannot be exported to GGUF.")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root / "gguf-py"), str(root), os.environ.get("PYTHONPATH", "")]))
    if fallback_pre:
        env["TUNELOOP_FALLBACK_PRE"] = fallback_pre
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    cmd = [sys.executable, "-c", _DRIVER, str(root), str(model_dir), "--outfile", str(tmp),
           "--outtype", outtype]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = [ln for ln in (done.stderr or "").splitlines() if ln.strip()][-3:]
        raise ConverterError(f"llama.cpp's converter failed on {model_dir} (exit "
                             f"{done.returncode}): {' | '.join(tail)}")
    tmp.replace(out_path)
    return {"path": str(out_path), "hf_arch": arch, "dtype": outtype, "writer": "llama.cpp",
            "converter": str(root), "size_bytes": out_path.stat().st_size}
