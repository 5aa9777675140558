#!/usr/bin/env bash
# The SSH step of .github/workflows/deploy.yml: runs scripts/deploy.sh on the server, then
# verifies the deep health endpoint there. The end-to-end test runs this very script against a
# local sshd, so what CI does is what is tested.
#
# Usage: scripts/deploy-remote.sh production|staging
# Environment (GitHub secrets in the workflow):
#   SERVER_HOST, SERVER_USER          required
#   CI_SSH_KEY or CI_SSH_KEY_FILE     the private key (contents, or a file)
#   SERVER_PORT                       default 22
#   PROJECT_PATH                      default /home/deploy/whisper (the server's checkout)
#   SSH_KNOWN_HOSTS                   known_hosts line(s) for the server; without it the host key
#                                     is trusted on first use (accept-new)
#   OPENAI_API_KEY, SLACK_WEBHOOK_URL, TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID
#                                     optional; sent over the SSH channel's stdin, never on a
#                                     command line, and written by deploy.sh into the env file
#   HEALTH_PORT                       port checked after the deploy (8000, staging 8001)
set -euo pipefail

readonly SECRETS=(OPENAI_API_KEY SLACK_WEBHOOK_URL TELEGRAM_BOT_TOKEN TELEGRAM_CHAT_ID)

die() { printf 'deploy-remote: %s\n' "$*" >&2; exit 1; }

environment="${1:-}"
[[ "$environment" == production || "$environment" == staging ]] || die "usage: $0 production|staging"
: "${SERVER_HOST:?SERVER_HOST is not set (a repository secret)}"
: "${SERVER_USER:?SERVER_USER is not set (a repository secret)}"
port="${SERVER_PORT:-22}"
project="${PROJECT_PATH:-/home/deploy/whisper}"
health_port="${HEALTH_PORT:-$([[ "$environment" == production ]] && echo 8000 || echo 8001)}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -n "${CI_SSH_KEY:-}" ]]; then
    (umask 077 && printf '%s\n' "$CI_SSH_KEY" >"$work/key")
elif [[ -n "${CI_SSH_KEY_FILE:-}" ]]; then
    install -m 600 "$CI_SSH_KEY_FILE" "$work/key"
else
    die "CI_SSH_KEY (or CI_SSH_KEY_FILE) is not set"
fi
host_check=accept-new
if [[ -n "${SSH_KNOWN_HOSTS:-}" ]]; then
    printf '%s\n' "$SSH_KNOWN_HOSTS" >"$work/known_hosts"
    host_check=yes
fi

ssh_opts=(-p "$port" -i "$work/key" -o IdentitiesOnly=yes -o BatchMode=yes
    -o "UserKnownHostsFile=$work/known_hosts" -o "StrictHostKeyChecking=$host_check"
    -o ConnectTimeout=20 -o ServerAliveInterval=30 -o ServerAliveCountMax=6)
target="$SERVER_USER@$SERVER_HOST"

secrets() {
    local name
    for name in "${SECRETS[@]}"; do
        [[ -n "${!name:-}" ]] && printf '%s=%s\n' "$name" "${!name}"
    done
    return 0
}

printf -v remote_dir '%q' "$project"
echo "deploy-remote: deploying $environment to $target:$project"
# shellcheck disable=SC2029  # expanded here on purpose: the path is quoted with %q above
secrets | ssh "${ssh_opts[@]}" "$target" \
    "cd $remote_dir && ./scripts/deploy.sh $environment --secrets-stdin"

# deploy.sh ran the deep check on the new colour's admin listener; this one goes through the proxy.
echo "deploy-remote: verifying http://127.0.0.1:$health_port/health on the server"
# shellcheck disable=SC2029  # the port is expanded here on purpose
ssh "${ssh_opts[@]}" "$target" "curl -fsS --max-time 20 'http://127.0.0.1:$health_port/health'" </dev/null
echo
echo "deploy-remote: $environment is healthy"
