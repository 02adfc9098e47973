"""Runs where readers run it: the profile a reader gets on a GPU, and the release every notebook,
badge and config takes its repository and version from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ASSIGNMENTS = sorted((ROOT / "coursework").glob("*.ipynb"))


def _profile_lines(notebook: Path) -> str:
    """The notebook's own lines that import ``resolve_profile`` and set ``PROFILE`` (as written)."""
    for cell in json.loads(notebook.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and re.search(r"^PROFILE = resolve_profile\(", source, flags=re.M):
            lines = source.splitlines()
            imports = [line for line in lines if re.match(r"from \S+ import .*\bresolve_profile\b", line)]
            assignment = [line for line in lines if line.startswith("PROFILE = resolve_profile(")]
            assert imports and len(assignment) == 1, notebook.name
            return "\n".join(imports + assignment)
    raise AssertionError(f"{notebook.name}: no `PROFILE = resolve_profile(...)` line")


@pytest.mark.parametrize("notebook", CHAPTERS + ASSIGNMENTS, ids=lambda p: p.stem)
def test_a_reader_on_a_gpu_gets_the_quick_profile(notebook, monkeypatch):
    """On Colab with a GPU (CUDA mocked here), nothing set: the chapter runs the published book's
    `quick` recipe, not the hours-long `full` one; `full` only when asked for."""
    monkeypatch.delenv("MINI_DECODERS_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    code = _profile_lines(notebook)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the notebook's own two lines
    assert namespace["PROFILE"] == "quick", f"{notebook.name}: {namespace['PROFILE']!r} on a GPU"
    monkeypatch.setenv("MINI_DECODERS_PROFILE", "full")
    exec(code, namespace)  # noqa: S102
    assert namespace["PROFILE"] == "full"


def test_no_text_says_auto_is_full_on_a_gpu():
    paths = [ROOT / "README.md", ROOT / "Makefile", ROOT / "_config.yml", *sorted((ROOT / "book").glob("*.md")),
             *CHAPTERS, *ASSIGNMENTS, *sorted((ROOT / "mini_decoders").rglob("*.py"))]
    stale = re.compile(r"full\W{0,3} on (?:a )?GPU|full\W{0,3} when (?:a )?CUDA|chapters (?:run|use) the `full` profile",
                       flags=re.I)
    found = [f"{path.relative_to(ROOT)}: {match.group(0)!r}" for path in paths
             for match in stale.finditer(path.read_text())]
    assert not found, "text that says `auto` means `full` on a GPU:\n" + "\n".join(found)


# ---------------------------------------------------------------------------- one setting for the release
def test_badges_install_cells_and_config_take_the_repository_and_version_from_book_settings():
    from mini_decoders import book_settings

    assert book_settings.check(ROOT) == []
    for notebook in CHAPTERS + ASSIGNMENTS:  # the same, spelled out
        cells = json.loads(notebook.read_text())["cells"]
        relative = notebook.relative_to(ROOT).as_posix()
        assert "".join(cells[0]["source"]) == book_settings.colab_badge(relative), notebook.name
        install = "".join(cells[1]["source"])
        assert install == book_settings.install_cell(), notebook.name
        assert f'"mini-decoders=={book_settings.VERSION}"' in install
    import yaml

    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    assert repository == {"url": book_settings.repository_url(), "branch": book_settings.BRANCH}


def test_a_notebook_that_disagrees_is_found_and_synced(tmp_path):
    from mini_decoders import book_settings

    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "notebooks").mkdir()
    source = json.loads(CHAPTERS[0].read_text())
    stale = json.loads(json.dumps(source))
    stale["cells"][0]["source"] = [source["cells"][0]["source"][0].replace("mini-decoders/mini-decoders", "me/fork")]
    stale["cells"][1]["source"] = ["".join(source["cells"][1]["source"]).replace("==0", "==9")]
    path = tmp_path / "notebooks" / CHAPTERS[0].name
    path.write_text(json.dumps(stale, indent=1, ensure_ascii=False) + "\n")
    (tmp_path / "_config.yml").write_text("title: t\nrepository:\n  url: https://github.com/me/fork\n  branch: dev\n"
                                          "html:\n  use_repository_button: true\n")
    problems = book_settings.check(tmp_path)
    assert len(problems) == 3 and "cell 0" in problems[0] and "cell 1" in problems[1] and "_config.yml" in problems[2]
    assert book_settings.main(["--root", str(tmp_path), "--check"]) == 1
    assert book_settings.main(["--root", str(tmp_path)]) == 0
    assert book_settings.check(tmp_path) == []
    synced = json.loads(path.read_text())
    assert synced["cells"][2:] == source["cells"][2:] and synced["cells"][1]["metadata"] == source["cells"][1]["metadata"]
    assert "use_repository_button: true" in (tmp_path / "_config.yml").read_text()


def test_the_version_is_written_once():
    import tomllib

    import mini_decoders
    from mini_decoders import book_settings

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mini_decoders.__version__"}
    assert book_settings.VERSION == mini_decoders.__version__
    assert set(project["project"]["urls"].values()) == {book_settings.repository_url()}
    versions = re.findall(r"__version__\s*=", "".join(p.read_text() for p in (ROOT / "mini_decoders").rglob("*.py")))
    assert len(versions) == 1


class _Pip:
    def __init__(self, returncode: int, stderr: str = ""):
        self.returncode, self.stderr, self.stdout = returncode, stderr, ""


def test_the_install_cell_installs_the_pinned_release_on_colab_only(monkeypatch, capsys):
    import subprocess
    import sys
    import types

    from mini_decoders import book_settings

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command) or _Pip(0))
    exec(book_settings.install_cell(), {})  # noqa: S102 - not on Colab: does nothing
    assert calls == []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(book_settings.install_cell(), {})  # noqa: S102
    assert calls == [[sys.executable, "-m", "pip", "install", "--quiet", f"mini-decoders=={book_settings.VERSION}"]]
    assert capsys.readouterr().out.startswith("GPU: ")


def test_before_the_release_is_on_pypi_the_install_cell_says_what_to_install_instead(monkeypatch):
    import subprocess
    import sys
    import types

    from mini_decoders import book_settings

    version = book_settings.VERSION
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    refused = f"ERROR: Could not find a version ...\nERROR: No matching distribution found for mini-decoders=={version}\n"
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: _Pip(1, refused))
    with pytest.raises(RuntimeError) as error:
        exec(book_settings.install_cell(), {})  # noqa: S102
    message = str(error.value)
    assert "\n" not in message and f"No matching distribution found for mini-decoders=={version}" in message
    assert f'%pip install "git+{book_settings.repository_url()}@{book_settings.BRANCH}"' in message
    assert f"@v{version} once that release is tagged" in message


def test_the_release_workflow_builds_checks_and_publishes_on_a_tag():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert trigger == {"push": {"tags": ["v*"]}}
    jobs = workflow["jobs"]
    build = "\n".join(str(step.get("run", "")) for step in jobs["build"]["steps"])
    assert "python -m build" in build and "twine check" in build and "book_settings --check" in build
    assert 'GITHUB_REF_NAME#v' in build  # the tag must be the version that was built
    publish = jobs["pypi"]
    assert publish["permissions"] == {"id-token": "write"} and publish["environment"]["name"] == "pypi"
    assert any(step.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for step in publish["steps"])
    assert not any("password" in json.dumps(step) for step in publish["steps"])  # trusted publishing: no token
    release = jobs["github-release"]
    assert release["needs"] == "pypi" and release["permissions"] == {"contents": "write"}
    assert any("gh release create" in step.get("run", "") for step in release["steps"])


# ---------------------------------------------------------------------------- what a pip user can reach
def test_no_chapter_or_package_message_sends_readers_to_data_scripts():
    """`data_scripts/` is in the repository, not in the wheel: chapters and the package name the
    command (`mini-decoders data fetch NAME`) or the Python API instead."""
    paths = [*CHAPTERS, *ASSIGNMENTS, *sorted((ROOT / "mini_decoders").rglob("*.py"))]
    found = [path.relative_to(ROOT).as_posix() for path in paths if "data_scripts" in path.read_text()]
    assert not found, f"sends pip users to data_scripts/: {found}"


def test_data_list_and_fetch_dry_run_cover_every_registered_dataset(capsys, monkeypatch):
    from mini_decoders.cli import main
    from mini_decoders.data.registry import REGISTRY

    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in REGISTRY) and "mini-decoders data fetch NAME" in listed
    monkeypatch.setenv("MINI_DECODERS_DATA", str(ROOT / "nowhere"))
    for name in REGISTRY:  # nothing is downloaded: --dry-run only says what would be
        assert main(["data", "fetch", name, "--dry-run"]) == 0, name
        said = capsys.readouterr().out
        assert said.startswith(f"{name}: ") and "would download" in said, said
    assert not (ROOT / "nowhere").exists()


def test_chapter_4_fetches_its_real_data_through_the_package():
    cells = ["".join(cell["source"]) for cell in json.loads((ROOT / "notebooks" / "04_poyo_spike_tokens.ipynb")
                                                            .read_text())["cells"]]
    section = next(source for source in cells if "load_yu2009(" in source and "import load_yu2009" in source)
    assert "MINI_DECODERS_DATA" not in section, "the section must not wait for MINI_DECODERS_DATA to be set"
    assert 'load_yu2009("ex1")' in section and "except MiniDecodersError" in section


# ---------------------------------------------------------------------------- what the GPU check needs
def test_train_takes_a_precision_and_refuses_one_that_cannot_run_before_writing(tmp_path):
    import mini_decoders as md
    from mini_decoders.data import simulate
    from mini_decoders.errors import RunError

    sessions = simulate(n_sessions=1, n_trials=40, seed=0).sessions
    with pytest.raises(RunError, match="fp16 needs a CUDA GPU"):
        md.train("gru", sessions, profile="tiny", out=tmp_path / "a", device="cpu", precision="fp16", progress=False)
    with pytest.raises(RunError, match="closed form: --precision does not apply"):
        md.train("ridge", sessions, profile="tiny", out=tmp_path / "b", precision="bf16", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    run = md.train("gru", sessions, profile="tiny", out=tmp_path / "c", device="cpu", precision="bf16", max_steps=20,
                   progress=False)
    assert run.config["model_config"]["precision"] == "bf16"
    curve = run.metrics["training"]["history"]["loss_curve"]
    assert [step for step, _ in curve] == [10, 20] and all(loss > 0 for _, loss in curve)


def test_a_torchrun_world_of_one_is_distributed(monkeypatch):
    from mini_decoders.training.distributed import world_info

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not world_info().is_distributed
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # set by torchrun in every process it starts
    assert world_info().is_distributed and world_info().world_size == 1
