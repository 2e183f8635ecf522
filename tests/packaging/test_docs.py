"""Every command in the user-facing docs is one that works.

- `kubescribe ...` lines are parsed by the real command's argparse parser (the command is
  stopped right after parsing, nothing runs): an unknown subcommand or flag, a missing
  argument or a bad choice fails;
- `helm` lines name the real chart, and their `--set`/`--values` pass the chart's
  values.schema.json (real Helm); `kubectl`, `docker` and `curl` lines name files that exist;
- SpeechModel YAML snippets validate against the operator's API models; Python snippets
  compile; relative links point at files that exist.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import helm_python
import pytest
import yaml
from pkg_helpers import CHART, ROOT, render_chart

from kubescribe.cli import SUBCOMMANDS
from kubescribe.cli import main as kubescribe_main

DOCS = [
    ROOT / "docs" / name for name in ("user-guide.md", "operations.md", "artifacts.md", "images.md")
] + [ROOT / "charts" / "kubescribe" / "README.md"]
SHELL = {"sh", "bash", "shell", "console"}
PATH_PREFIXES = ("examples/", "charts/", "crds/", "docs/", "runtime/", "operator/", "tests/")


def code_blocks(path: Path) -> Iterator[tuple[str, str, int]]:
    """(language, text, first line number) of each fenced block."""
    return code_blocks_in(path.read_text())


def code_blocks_in(text: str) -> Iterator[tuple[str, str, int]]:
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        match = re.match(r"^(\s*)```(\w*)\s*$", lines[index])
        if not match:
            index += 1
            continue
        indent, language, start = match.group(1), match.group(2), index + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line.removeprefix(indent) for line in lines[start:end])
        yield language, body, start + 1
        index = end + 1


def shell_commands(text: str) -> Iterator[str]:
    """Commands of a shell block: continuations joined, prompts and comments dropped."""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s(?:&&|\|\||\||;)\s", line):
            yield part.strip()


def doc_commands(program: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for language, text, line in code_blocks(doc):
            if language in SHELL:
                found += [
                    (f"{doc.name}:{line}", command)
                    for command in shell_commands(text)
                    if command.split()[0] == program
                ]
    return found


def ids(commands: list[tuple[str, str]]) -> list[str]:
    return [f"{where} {command[:60]}" for where, command in commands]


# ------------------------------------------------------------------------- kubescribe ...


class Parsed(BaseException):
    """Raised right after the command's parser succeeded: the command itself never runs."""


@contextlib.contextmanager
def parse_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[argparse.Namespace]]:
    parsed: list[argparse.Namespace] = []
    original = argparse.ArgumentParser.parse_known_args

    def parse_known_args(
        self: argparse.ArgumentParser, args: Any = None, namespace: Any = None
    ) -> NoReturn:
        result, extras = original(self, args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        parsed.append(result)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
    yield parsed


def check_kubescribe(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = shlex.split(command)[1:]
    assert argv and argv[0] in SUBCOMMANDS, f"unknown subcommand: {command}"
    stderr = io.StringIO()
    with parse_only(monkeypatch) as parsed, contextlib.redirect_stderr(stderr):
        try:
            code = kubescribe_main(argv)
        except Parsed:
            code = None
        except SystemExit as exc:  # argparse refused the command line
            code = exc.code if isinstance(exc.code, int) else 2
    assert code is None and parsed, f"`{command}` does not parse: {stderr.getvalue()}"


KUBESCRIBE_COMMANDS = doc_commands("kubescribe")


def test_docs_use_the_kubescribe_command() -> None:
    used = {shlex.split(command)[1] for _, command in KUBESCRIBE_COMMANDS}
    assert {"serve", "transcribe", "export", "import", "evaluate", "render"} <= used


@pytest.mark.parametrize(("where", "command"), KUBESCRIBE_COMMANDS, ids=ids(KUBESCRIBE_COMMANDS))
def test_kubescribe_command_parses(
    where: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_kubescribe(command, monkeypatch)


@pytest.mark.parametrize(
    "command",
    [
        "kubescribe serve --no-such-flag",
        "kubescribe import only-one-argument",
        "kubescribe nonsense",
        "kubescribe serve --port",
    ],
)
def test_a_wrong_command_is_caught(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError):
        check_kubescribe(command, monkeypatch)


# ------------------------------------------------------------------- helm, kubectl, files


def repo_paths(command: str) -> list[str]:
    paths = []
    for token in shlex.split(command):
        token = token.split("=", 1)[-1].removeprefix("@")
        if token.startswith(PATH_PREFIXES) and "$" not in token and "*" not in token:
            paths.append(token.split("#")[0])
    return paths


ALL_COMMANDS = [
    (where, command)
    for program in ("kubectl", "helm", "docker", "curl", "kubescribe", "promtool")
    for where, command in doc_commands(program)
]


@pytest.mark.parametrize(("where", "command"), ALL_COMMANDS, ids=ids(ALL_COMMANDS))
def test_files_named_by_commands_exist(where: str, command: str) -> None:
    for path in repo_paths(command):
        assert (ROOT / path).exists(), f"{where}: {path} does not exist"


HELM_COMMANDS = [
    (where, command)
    for where, command in doc_commands("helm")
    if shlex.split(command)[1] in ("install", "upgrade", "template")
]


def helm_values(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """The chart argument and the values a `helm install/upgrade/template` line passes."""
    values: dict[str, Any] = {}
    positional = []
    index = 2
    while index < len(argv):
        arg = argv[index]
        if arg in ("--set", "--set-string"):
            merge(values, helm_python.parse_set_string(argv[index + 1]))
            index += 2
        elif arg in ("-f", "--values"):
            merge(values, yaml.safe_load((ROOT / argv[index + 1]).read_text()) or {})
            index += 2
        elif arg in ("-n", "--namespace", "--version", "--timeout"):
            index += 2
        elif arg.startswith("-"):
            index += 1
        else:
            positional.append(arg)
            index += 1
    return positional[-1], values


def merge(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def test_every_chart_value_is_documented() -> None:
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in values if f"`{key}" not in guide]
    assert not missing, f"docs/user-guide.md does not describe the chart values {missing}"


def leaf_values(values: dict[str, Any], prefix: str = "") -> list[str]:
    leaves = []
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in ("resources",):
            leaves += leaf_values(value, f"{prefix}{key}.")
        else:
            leaves.append(f"{prefix}{key}")
    return leaves


def test_chart_readme_describes_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    leaves = leaf_values(values)
    assert "metrics.serviceMonitor.alerts" in leaves
    # `a.b.c` in full, or `.c` on the row of a documented `a.b...`
    missing = [
        leaf
        for leaf in leaves
        if f"`{leaf}`" not in readme
        and not re.search(
            rf"`{re.escape(leaf.rsplit('.', 1)[0])}\.[^`]*`.*`\.{leaf.rsplit('.', 1)[-1]}`", readme
        )
    ]
    assert not missing, f"charts/kubescribe/README.md does not describe {missing}"
    assert "`global`" in readme


def crd_upgrade_commands() -> list[tuple[str, str]]:
    return [
        (where, command)
        for where, command in doc_commands("kubectl")
        if command.split()[1] == "apply" and "crds/" in command
    ]


def test_crd_upgrades_take_the_fields_over_from_helm_for_every_crd() -> None:
    # Helm created the CRDs: a server-side apply without --force-conflicts is refused with a
    # conflict (tests/packaging/test_chart_live.py shows both on the local control plane).
    commands = crd_upgrade_commands()
    assert {where.split(":")[0] for where, _ in commands} >= {"user-guide.md", "README.md"}
    # The chart's own CRDs and its kopf-peering subchart's.
    chart_crds = {path.name for path in CHART.glob("**/crds/*.yaml")}
    for where, command in commands:
        argv = shlex.split(command)
        assert "--server-side" in argv and "--force-conflicts" in argv, where
        applied = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-f"}
        covered = {path.name for name in applied for path in (ROOT / name).glob("*.yaml")} | {
            Path(name).name for name in applied if name.endswith(".yaml")
        }
        assert chart_crds <= covered, f"{where}: {sorted(chart_crds - covered)} not applied"


def uninstall_steps(doc: Path) -> list[str]:
    """The shell commands of a doc's "Uninstall" section, in order."""
    text = doc.read_text()
    section = text[text.index("## Uninstall") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    # The first shell block is the procedure; later ones are recoveries from another order.
    first = next(body for language, body, _ in code_blocks_in(section) if language in SHELL)
    return list(shell_commands(first))


@pytest.mark.parametrize(
    "doc", [ROOT / "docs" / "user-guide.md", CHART / "README.md"], ids=["user-guide", "chart"]
)
def test_uninstall_deletes_every_speechmodel_before_the_operator(doc: Path) -> None:
    # The operator removes its finalizer from each SpeechModel it lets go: once uninstalled,
    # nothing does, and the models, their namespaces and the CRD stay Terminating.
    # (test_chart_live.py runs these steps, and the wrong order, on the local control plane.)
    steps = uninstall_steps(doc)
    kinds = [
        "speechmodels" if cmd.startswith("kubectl delete speechmodels") else
        "operator" if cmd.startswith("helm uninstall") else
        "crds" if cmd.startswith("kubectl delete") and "crds/" in cmd else "other"
        for cmd in steps
    ]  # fmt: skip
    assert kinds == ["speechmodels", "operator", "crds"], steps
    delete_models = shlex.split(steps[0])
    assert {"--all", "--all-namespaces", "--wait"} <= {a.split("=")[0] for a in delete_models}


def test_docs_install_the_chart() -> None:
    charts = {helm_values(shlex.split(command))[0] for _, command in HELM_COMMANDS}
    assert "charts/kubescribe" in charts


@pytest.mark.parametrize(("where", "command"), HELM_COMMANDS, ids=ids(HELM_COMMANDS))
def test_helm_values_pass_the_chart_schema(where: str, command: str) -> None:
    chart, values = helm_values(shlex.split(command))
    if chart != "charts/kubescribe":
        assert "/" in chart and not (ROOT / chart).exists(), f"{where}: {chart}"
        return  # a third-party chart (prometheus-adapter): only its values file is checked
    with helm_python.Chart.load(str(CHART)) as loaded:
        loaded.validate_schema(values)


def known_names() -> dict[str, set[str]]:
    """Names a doc may name in kubectl commands: the example and snippet SpeechModels (their
    Services and HPAs share the name), and the chart's operator Deployment."""
    models, autoscaled = set(), set()
    sources = [path.read_text() for path in (ROOT / "examples" / "speechmodels").glob("*.yaml")]
    sources += [text for doc in DOCS for lang, text, _ in code_blocks(doc) if lang == "yaml"]
    for text in sources:
        for manifest in yaml.safe_load_all(text):
            if isinstance(manifest, dict) and manifest.get("kind") == "SpeechModel":
                models.add(manifest["metadata"]["name"])
                if manifest["spec"].get("autoscaling"):  # only these have an HPA
                    autoscaled.add(manifest["metadata"]["name"])
    objects = render_chart()[0]
    deployments = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "Deployment"}
    peerings = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "ClusterKopfPeering"}
    return {
        "speechmodel": models,
        "service": models,
        "hpa": autoscaled,
        "deployment": deployments,
        "clusterkopfpeering": peerings,
    }


KUBECTL_COMMANDS = doc_commands("kubectl")


@pytest.mark.parametrize(("where", "command"), KUBECTL_COMMANDS, ids=ids(KUBECTL_COMMANDS))
def test_kubectl_names_real_objects(where: str, command: str) -> None:
    names = known_names()
    aliases = {"speechmodels": "speechmodel", "sm": "speechmodel", "svc": "service"}
    tokens = shlex.split(command)
    for index, token in enumerate(tokens):
        kind, slash, name = token.partition("/")
        kind = aliases.get(kind, kind)
        if slash and kind in names:
            assert name in names[kind], f"{where}: no {kind} named {name}"
        elif kind in names and index + 1 < len(tokens) and index > 0:
            following = tokens[index + 1]
            verbs = ("get", "describe", "delete", "patch", "edit", "label", "annotate")
            # A shell variable ($name in a loop over real objects) names nothing by itself.
            if tokens[index - 1] in verbs and not following.startswith(("-", "$")):
                assert following in names[kind], f"{where}: no {kind} named {following}"


# ------------------------------------------------------------------------------ snippets


def test_speechmodel_snippets_are_valid() -> None:
    from kubescribe_operator.spec import SpeechModelSpec

    checked = 0
    for doc in DOCS:
        for language, text, line in code_blocks(doc):
            if language != "yaml":
                continue
            for manifest in yaml.safe_load_all(text):
                assert manifest is not None, f"{doc.name}:{line}: empty YAML"
                if isinstance(manifest, dict) and manifest.get("kind") == "SpeechModel":
                    SpeechModelSpec.model_validate(manifest["spec"])
                    checked += 1
    assert checked >= 3


def test_python_snippets_compile() -> None:
    for doc in DOCS:
        for language, text, line in code_blocks(doc):
            if language == "python":
                compile(text, f"{doc.name}:{line}", "exec")


def test_manifest_snippet_of_the_artifact_guide_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The NeMo section's second snippet, run on stand-in files: it must write a manifest that
    # the runtime's own loader accepts, with the right digests and vocabulary size.
    from kubescribe_runtime.manifest import ArtifactManifest, sha256_file

    doc = ROOT / "docs" / "artifacts.md"
    snippet = next(
        text
        for language, text, _ in code_blocks(doc)
        if language == "python" and "ArtifactManifest(" in text
    )
    out = tmp_path / "artifacts" / "stt-en-conformer-ctc-small"
    out.mkdir(parents=True)
    (out / "model.onnx").write_bytes(b"stand-in for the exported model")
    (out / "tokens.txt").write_text("\u2581the 0\ns 1\n<blk> 2\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, f"{doc.name}", "exec"), {})
    manifest = ArtifactManifest.load(out)
    assert manifest.vocab_size == 2
    assert manifest.files["model.onnx"] == sha256_file(out / "model.onnx")
    assert manifest.frontend.type == "nemo-logmel"


def test_relative_links_exist() -> None:
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"


def test_documented_images_match_the_code() -> None:
    from kubescribe_operator.runtime_spec import DEFAULT_CPU_IMAGE, DEFAULT_IMAGE

    images = (ROOT / "docs" / "images.md").read_text()
    assert DEFAULT_IMAGE in images and DEFAULT_CPU_IMAGE in images
    repository = yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"]
    assert repository.rsplit("/", 1)[0] == DEFAULT_IMAGE.rsplit("/", 1)[0]
    assert DEFAULT_CPU_IMAGE.rsplit("/", 1)[0] == DEFAULT_IMAGE.rsplit("/", 1)[0]
    for dockerfile in ("runtime/Dockerfile", "runtime/Dockerfile.cpu", "operator/Dockerfile"):
        text = (ROOT / dockerfile).read_text()
        base = re.search(r"^ARG \w+_IMAGE=(\S+)$", text, re.MULTILINE)
        assert base and base.group(1) in images, dockerfile
        assert f"-f {dockerfile} " in images, f"docs/images.md does not build {dockerfile}"


def test_images_doc_states_what_the_cuda_image_needs_and_that_images_come_first() -> None:
    text = " ".join((ROOT / "docs" / "images.md").read_text().split())
    assert "580 or newer" in text  # CUDA 13's minimum driver
    for dropped in ("Maxwell", "Pascal", "Volta"):  # the architectures CUDA 13 dropped
        assert dropped in text
    assert "Build and push them before you install anything" in text
