"""Quick checks of the deploy scripts' refusals, without Docker or an SSH server: they must fail
clearly, before any secret leaves the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from deploy_support import REPO


def run(cmd: list[str], env: dict, stdin: str = "", cwd: Path = REPO) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(cmd, capture_output=True, text=True, env={**base, **env}, input=stdin, cwd=cwd, timeout=60)


def test_deploy_remote_refuses_without_ssh_known_hosts(tmp_path):
    key = tmp_path / "key"
    key.write_text("not a key\n")
    result = run([str(REPO / "scripts" / "deploy-remote.sh"), "production"],
                 {"SERVER_HOST": "127.0.0.1", "SERVER_USER": "deploy", "SERVER_PORT": "9",
                  "CI_SSH_KEY_FILE": str(key), "OPENAI_API_KEY": "sk-must-not-leave"})
    assert result.returncode != 0
    assert "SSH_KNOWN_HOSTS is not set" in result.stderr, result.stderr
    assert "deploying" not in result.stdout, "it went on to connect"


def test_secrets_stdin_accepts_an_empty_last_value(tmp_path):
    """An empty value on the last line (an unset optional secret) is skipped, not a silent exit 1:
    the script goes on to its next check (here: the copy is not a git checkout)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "deploy.sh", tmp_path / "scripts" / "deploy.sh")
    result = run(["bash", str(tmp_path / "scripts" / "deploy.sh"), "production", "--secrets-stdin"],
                 {"COMPOSE": "true"}, stdin="OPENAI_API_KEY=sk-x\nTELEGRAM_CHAT_ID=", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "deployment log:" in output, output
    assert "sk-x" not in output
    assert "ERROR:" in output, f"exited {result.returncode} without saying why: {output}"
