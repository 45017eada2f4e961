"""Setting up llama.cpp's reference converter from a llama-cpp-python sdist, without a network:
a small .tar.gz laid out like the sdist is built here, unpacked into a cache under tmp_path and
found again. Only the converter's files come out; members pointing outside are refused."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tuiapp.engine.export import reference

VERSION = "9.9.9"
TOP = f"llama_cpp_python-{VERSION}"
FAKE_SCRIPT = "# a stand-in for convert_hf_to_gguf.py\nprint('converted')\n"
FAKE_MAP = 'TEXT_MODEL_MAP = {"LlamaForCausalLM": "llama", "FooForCausalLM": "foo"}\n'


def add(tar: tarfile.TarFile, name: str, text: str = "", kind: bytes = tarfile.REGTYPE,
        link: str = "") -> None:
    info = tarfile.TarInfo(name)
    data = text.encode()
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_sdist(folder: Path, extra: list[tuple] = (), name: str = f"{TOP}.tar.gz") -> Path:
    """A fake sdist: the converter's files plus the rest of a real one (C sources, the package)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with tarfile.open(path, "w:gz") as tar:
        vendor = f"{TOP}/vendor/llama.cpp"
        add(tar, f"{TOP}/pyproject.toml", "[project]\nname='llama_cpp_python'\n")
        add(tar, f"{TOP}/llama_cpp/__init__.py", "")
        add(tar, f"{vendor}/{reference.SCRIPT}", FAKE_SCRIPT)
        add(tar, f"{vendor}/LICENSE", "MIT License\n")
        add(tar, f"{vendor}/conversion", kind=tarfile.DIRTYPE)
        add(tar, f"{vendor}/conversion/__init__.py", FAKE_MAP)
        add(tar, f"{vendor}/gguf-py/gguf/__init__.py", "")
        add(tar, f"{vendor}/src/llama.cpp", "int main() {}\n")
        add(tar, f"{vendor}/convert_lora_to_gguf.py", "")
        for args in extra:
            add(tar, *args)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(reference.ENV, raising=False)
    monkeypatch.setattr(reference, "_installed_llama_cpp_version", lambda: VERSION)
    return tmp_path / "cache" / "tuneloop" / "llama-cpp-python"


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_only_the_converter_is_unpacked_and_recorded(cache, tmp_path):
    sdist = make_sdist(tmp_path / "dl")
    root = reference.unpack_converter(sdist, cache / VERSION, VERSION)
    assert root == cache / VERSION
    assert files_under(root) == {reference.SCRIPT, "LICENSE", "conversion/__init__.py",
                                 "gguf-py/gguf/__init__.py", reference.SOURCE_RECORD}
    assert (root / reference.SCRIPT).read_text() == FAKE_SCRIPT
    record = json.loads((root / reference.SOURCE_RECORD).read_text())
    assert record == {"sdist": sdist.name, "version": VERSION, "files": 4,
                      "sha256": hashlib.sha256(sdist.read_bytes()).hexdigest()}
    assert [p.name for p in cache.iterdir()] == [VERSION]  # no temporary folder left beside it
    # found again the way an export looks for it, and read without running it
    assert reference.find_converter() == root
    assert reference.converter_version(root) == VERSION
    assert reference.supported_architectures(root) == {"LlamaForCausalLM", "FooForCausalLM"}


@pytest.mark.parametrize("member", [f"{TOP}/vendor/llama.cpp/conversion/../../../../evil.py",
                                    "/etc/evil.py"])
def test_a_member_pointing_outside_is_refused(cache, tmp_path, member):
    sdist = make_sdist(tmp_path / "dl", extra=[(member, "import os\n")])
    with pytest.raises(reference.ConverterError, match="points outside"):
        reference.unpack_converter(sdist, cache / VERSION, VERSION)
    assert not (cache / VERSION).exists() and list(cache.iterdir()) == []
    assert not (tmp_path / "evil.py").exists()
    assert reference.find_converter() is None


def test_a_link_inside_the_converter_is_refused(cache, tmp_path):
    link = (f"{TOP}/vendor/llama.cpp/gguf-py/gguf/passwd", "", tarfile.SYMTYPE, "/etc/passwd")
    sdist = make_sdist(tmp_path / "dl", extra=[link])
    with pytest.raises(reference.ConverterError, match="link"):
        reference.unpack_converter(sdist, cache / VERSION, VERSION)
    assert list(cache.iterdir()) == []


def test_an_archive_without_the_converter_is_refused(cache, tmp_path):
    path = tmp_path / f"{TOP}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        add(tar, f"{TOP}/pyproject.toml", "")
    with pytest.raises(reference.ConverterError, match="is this a llama-cpp-python sdist"):
        reference.unpack_converter(path, cache / VERSION, VERSION)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(reference.ConverterError, match="not a readable"):
        reference.unpack_converter(tmp_path / "junk.tar.gz", cache / VERSION, VERSION)
    assert list(cache.iterdir()) == []


def test_setup_from_a_local_sdist_then_reused(cache, tmp_path, monkeypatch):
    sdist = make_sdist(tmp_path / "dl")
    root = reference.setup_converter(sdist=sdist)
    assert root == cache / VERSION and reference.find_converter() == root

    def no_download(*_a, **_k):
        raise AssertionError("set up already; nothing may be downloaded")

    monkeypatch.setattr(reference, "download_sdist", no_download)
    assert reference.setup_converter() == root


def test_setup_refuses_an_sdist_of_another_version(cache, tmp_path):
    other = make_sdist(tmp_path / "dl", name="llama_cpp_python-0.0.1.tar.gz")
    with pytest.raises(reference.ConverterError, match=f"0.0.1 but {VERSION} is installed"):
        reference.setup_converter(sdist=other)
    with pytest.raises(reference.ConverterError, match="no such sdist"):
        reference.setup_converter(sdist=tmp_path / "missing.tar.gz")


def test_setup_without_an_sdist_downloads_the_installed_version(cache, tmp_path, monkeypatch):
    asked = []

    def fake_download(version, folder, timeout=900):
        asked.append(version)
        return make_sdist(folder)

    monkeypatch.setattr(reference, "download_sdist", fake_download)
    root = reference.setup_converter(dest=tmp_path / "elsewhere")
    assert asked == [VERSION] and root == tmp_path / "elsewhere" / VERSION
    assert (root / reference.SCRIPT).is_file()


def test_a_failed_download_says_so(cache, tmp_path, monkeypatch):
    # the same command set-up runs, with an interpreter that fails the way pip does offline
    monkeypatch.setattr(reference.sys, "executable", "false")
    with pytest.raises(reference.ConverterError, match="could not download .* 9.9.9 sdist"):
        reference.setup_converter()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_the_command_sets_it_up_and_says_where(cache, tmp_path, monkeypatch):
    """`tuneloop export setup-converter --sdist` as ./dev.sh setup runs it; `export REF` is
    still routed to the export itself."""
    from typer.testing import CliRunner

    from tuiapp.__main__ import app

    runner = CliRunner()
    sdist = make_sdist(tmp_path / "dl")
    home = str(tmp_path / "home")
    res = runner.invoke(app, ["--home", home, "export", "setup-converter", "--sdist", str(sdist)])
    assert res.exit_code == 0, res.output
    assert f"llama-cpp-python {VERSION}) in {cache / VERSION}" in res.output
    assert "it converts 2 architectures, e.g. LlamaForCausalLM" in res.output
    res = runner.invoke(app, ["--home", home, "export", "setup-converter", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["architectures"] == [
        "FooForCausalLM", "LlamaForCausalLM"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))
    missing = runner.invoke(app, ["--home", home, "export", "setup-converter", "--sdist",
                                  str(tmp_path / "nope.tar.gz")])
    assert missing.exit_code == 1 and "nope.tar.gz: no such sdist" in missing.output
    routed = runner.invoke(app, ["--home", home, "export", "424242"])
    assert routed.exit_code == 2 and "no run with id 424242" in routed.output
