"""A deploy bundle works where it is used: on the machine that built it (codesign
installed) and on a board (numpy and pynq only). Its README example is what runs here,
so the docs stay true; its driver is the package ``codesign_host``, which never mixes
with an installed ``codesign``."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

# what a run checks after the README example: the bits the bundle's reference carries
CHECK = """
import numpy as np

reference = bundle.reference()
raw = bundle.accelerator.run_raw(bundle.accelerator.quantize_input(images), task=0)
assert np.array_equal(raw, reference["golden_raw_task0"]), "not the golden executor's bits"
assert np.array_equal(outputs, reference["golden_task0"]), "not the golden outputs"
print("driver", sys.modules["codesign_host"].__file__)
print("codesign imported:", "codesign" in sys.modules)
"""


@pytest.fixture
def fast_build(monkeypatch, tiny_build):
    """deploy() on the session's m3vit-tiny build instead of building again."""
    import codesign.api

    monkeypatch.setattr(codesign.api, "build", lambda *args, **kwargs: tiny_build)
    return tiny_build


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, tiny_build):
    import codesign.api
    from codesign.deploy import deploy

    root = tmp_path_factory.mktemp("bundle")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codesign.api, "build", lambda *args, **kwargs: tiny_build)
        return deploy("m3vit-tiny", "zcu102", root / "m3vit-tiny-zcu102", bitstreams=root / "none",
                      images=1)  # fmt: skip


def readme_example(bundle: Path) -> str:
    """The Python example of the bundle's README, as a user copies it."""
    text = (bundle / "README.md").read_text()
    match = re.search(r"## From Python\n.*?```python\n(.*?)```", text, re.S)
    assert match, "the bundle README has no Python example"
    return match.group(1)


def run_python(code: str, cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *flags, "-c", code], cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_readme_example_runs_where_codesign_is_installed(bundle_dir):
    """The failure this guards against: host/ first on sys.path gave a partial `codesign`
    whose missing submodules the editable install's finder supplied from the source tree,
    and the golden board died on `No module named 'codesign.numerics.aptypes'`."""
    example = readme_example(bundle_dir)
    assert 'device="golden"' in example  # no bitstream: the example runs off the board as is
    code = "import importlib.util\nassert importlib.util.find_spec('codesign')\n"
    result = run_python(code + example + CHECK, bundle_dir)
    assert f"driver {bundle_dir / 'host' / 'codesign_host' / '__init__.py'}" in result.stdout
    assert "codesign imported: False" in result.stdout  # the toolkit was there, untouched


@pytest.fixture
def no_codesign(tmp_path) -> str:
    """A prelude for ``python -I -S``: numpy and pynq importable, and a ``codesign`` that
    fails on import first on sys.path, so any use of the toolkit shows."""
    import pynq

    poison = tmp_path / "poison" / "codesign"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text('raise ImportError("codesign is not installed here")\n')
    sites = sorted({str(Path(module.__file__).parents[1]) for module in (np, pynq)})
    return textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(poison.parent)!r}]
        sys.path += {sites!r}
        try:
            import codesign
        except ImportError:
            pass
        else:
            raise AssertionError("codesign is importable")
        """
    )


def test_readme_example_runs_without_codesign(bundle_dir, no_codesign):
    """On a board: no codesign, no site-packages processing (no editable finder)."""
    result = run_python(no_codesign + readme_example(bundle_dir) + CHECK, bundle_dir, "-I", "-S")
    assert "codesign imported: False" in result.stdout


def test_devices_needing_codesign_say_so_without_it(bundle_dir, no_codesign):
    code = no_codesign + textwrap.dedent(
        """
        sys.path.insert(0, "host")
        from codesign_host.runtime import CodesignRequiredError, Bundle

        bundle = Bundle(".")
        for device in ("csim", "rtl"):
            try:
                bundle.open(device)
            except CodesignRequiredError as error:
                print(error)
            else:
                raise AssertionError(device + " opened without codesign")
        try:
            from codesign_host.runtime import csim_board
        except ImportError as error:
            print(type(error).__name__, error)
        try:
            bundle.open("board")
        except FileNotFoundError as error:
            print(error)
        """
    )
    lines = run_python(code, bundle_dir, "-I", "-S").stdout.splitlines()
    assert lines[0].startswith("device='csim' needs the full codesign package")
    assert lines[1].startswith("device='rtl' needs the full codesign package")
    assert "runs device='board' and device='golden' on its own" in lines[0]
    assert lines[2].startswith("CodesignRequiredError codesign.runtime.csim_device needs")
    assert "no bitstream" in lines[3] and "make bitstream" in lines[3]


def test_bundle_driver_is_self_contained(bundle_dir):
    """Every import the driver runs when loaded stays inside ``codesign_host`` or goes to
    the standard library, numpy or pynq; nothing in host/ is named ``codesign``."""
    host = bundle_dir / "host"
    assert sorted(p.name for p in host.iterdir()) == ["codesign_host"]
    package = host / "codesign_host"
    allowed = set(sys.stdlib_module_names) | {"numpy", "pynq"}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(host).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        base = parts if path.name == "__init__.py" else parts[:-1]
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level: what importing the module runs
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed, f"{path}: import {alias.name}"
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in allowed | {"__future__"}, path
            elif isinstance(node, ast.ImportFrom):
                target = base[: len(base) - node.level + 1] + (node.module or "").split(".")
                target = [part for part in target if part]
                names = [[*target, alias.name] for alias in node.names]
                found = [
                    host.joinpath(*t).with_suffix(".py").is_file()
                    or (host.joinpath(*t) / "__init__.py").is_file()
                    for t in [target, *names]
                ]
                assert any(found), f"{path}: from {'.' * node.level}{node.module} import ..."
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert "host/codesign_host/runtime/driver.py" in manifest["files"]
    assert not any(name.startswith("host/codesign/") for name in manifest["files"])


@pytest.mark.csim
def test_csim_from_the_bundle_borrows_the_installed_codesign(bundle_dir):
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, "host")
        import numpy as np
        from codesign_host.runtime import open_bundle

        bundle = open_bundle(".", device="csim")
        reference = bundle.reference()
        raw = bundle.accelerator.run_raw(reference["input_raw"], 1)
        assert np.array_equal(raw, reference["golden_raw_task1"])
        print(type(bundle.device).__module__, type(bundle.accelerator).__module__)
        """
    )
    result = run_python(code, bundle_dir)
    assert result.stdout.split() == ["codesign.runtime.simulated", "codesign_host.runtime.driver"]


def test_rtl_from_the_bundle_gets_the_program_as_bytes(bundle_dir):
    """The installed RTL board parses the Program itself: the copy's ProgramLayout is not
    the installed one, so it must hand over bytes (a stub board stands in for Verilator)."""
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, "host")
        import codesign.runtime.rtl_device as rtl_device
        from codesign_host.runtime import Bundle

        seen = {}
        def stub(arch, program=None, board=None):
            seen.update(program=program, board=board)
            raise RuntimeError("stub")
        rtl_device.rtl_board = stub
        bundle = Bundle(".")
        try:
            bundle.open("rtl")
        except RuntimeError:
            pass
        assert seen["program"] == (bundle.root / "program.bin").read_bytes()
        print(seen["board"])
        """
    )
    assert run_python(code, bundle_dir).stdout.strip() == "zcu102"


def test_default_out_is_under_build(fast_build, tmp_path, monkeypatch):
    """build/deploy/<model>-<board>, beside codesign build's folders: ignored by git and
    ruff (.gitignore has build/)."""
    from codesign.deploy import deploy

    monkeypatch.chdir(tmp_path)
    out = deploy("m3vit-tiny", "zcu102", bitstreams=tmp_path / "none", images=1)
    assert out == Path("build", "deploy", "m3vit-tiny-zcu102")
    assert (tmp_path / out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]
    repo = Path(__file__).resolve().parents[1]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "build/deploy/m3vit-tiny-zcu102/README.md"], cwd=repo
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0, "build/deploy/ is not ignored by .gitignore"


def test_cli_names_the_folder_to_run_make_bitstream_in(fast_build, tmp_path, monkeypatch):
    from codesign.deploy import deploy_command

    monkeypatch.chdir(tmp_path)
    project = tmp_path / "build" / "m3vit-tiny-zcu102" / "hls"
    project.mkdir(parents=True)
    (project / "Makefile").write_text("bitstream:\n")  # as codesign build leaves it
    result = CliRunner().invoke(
        deploy_command, ["--model", "m3vit-tiny", "--out", "b", "--images", "1"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("wrote b/ (") for line in lines)
    assert "    make -C build/m3vit-tiny-zcu102/hls bitstream" in lines
    assert not any("codesign build" in line for line in lines)  # the project is there
    assert (
        "  then deploy again: it picks the bitstream up from "
        "build/m3vit-tiny-zcu102/hls/bitstreams/m3vit-tiny-zcu102" in lines
    )
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["missing"] == [f"{project}/bitstreams/m3vit-tiny-zcu102/*.bit"]
    readme = (tmp_path / "b" / "README.md").read_text()
    assert f"make -C {project} bitstream\n" in readme  # absolute: the README travels


def test_bitstream_steps_write_the_project_first_and_quote_paths(tmp_path, monkeypatch):
    from codesign.deploy import bitstream_steps

    monkeypatch.chdir(tmp_path)
    howto = {
        "hls_project": str(tmp_path / "my build" / "m-b" / "hls"),
        "project_exists": False,
        "codesign_build": "codesign build --model m --board b",
    }
    assert bitstream_steps(howto, relative=True) == [
        "codesign build --model m --board b --out 'my build/m-b'",
        "make -C 'my build/m-b/hls' bitstream",
    ]
    assert bitstream_steps({**howto, "project_exists": True}) == [
        f"make -C '{tmp_path}/my build/m-b/hls' bitstream"
    ]


def test_failed_deploy_leaves_no_folder_and_keeps_the_old_one(fast_build, tmp_path, monkeypatch):
    import codesign.deploy as deploy_module

    def broken(dest):
        (dest / "host").mkdir()
        raise OSError("disk full while copying the driver")

    out = tmp_path / "bundle"
    monkeypatch.setattr(deploy_module, "_copy_driver", broken)
    with pytest.raises(OSError, match="disk full"):
        deploy_module.deploy("m3vit-tiny", "zcu102", out, bitstreams=tmp_path / "none", images=1)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    deploy_module.deploy("m3vit-tiny", "zcu102", out, bitstreams=tmp_path / "none", images=1)
    before = (out / "manifest.json").read_bytes()
    monkeypatch.setattr(deploy_module, "_copy_driver", broken)
    with pytest.raises(OSError, match="disk full"):
        deploy_module.deploy("m3vit-tiny", "zcu102", out, bitstreams=tmp_path / "none", images=1)
    assert (out / "manifest.json").read_bytes() == before
    assert (out / "host" / "codesign_host" / "runtime" / "driver.py").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp folder left
