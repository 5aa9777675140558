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
#   SSH_KNOWN_HOSTS                   required: known_hosts line(s) for the server
#                                     (ssh-keyscan -p PORT HOST, checked out of band); the host
#                                     key is verified before any secret is sent
#   DEPLOY_REF                        the commit to deploy (default GITHUB_SHA; empty: branch head)
#   IMAGE_REPO, IMAGE_TAG, IMAGE_DIGEST  the image CI built for that commit (optional)
#   GITHUB_ACTOR, GITHUB_RUN_ID       recorded in the server's deployment log
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
[[ -n "${SSH_KNOWN_HOSTS:-}" ]] || die "SSH_KNOWN_HOSTS is not set: add the server's host key line(s) as a secret (ssh-keyscan -p $port $SERVER_HOST, verified out of band; see docs/deploy.md). Refusing to send secrets to an unverified host."
printf '%s\n' "$SSH_KNOWN_HOSTS" >"$work/known_hosts"
host_check=yes

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
# Not secrets: what to deploy and who asked, as quoted variable assignments on the remote side.
ref="${DEPLOY_REF-${GITHUB_SHA:-}}"
remote_env=""
for name in IMAGE_REPO IMAGE_TAG IMAGE_DIGEST; do
    [[ -n "${!name:-}" ]] && printf -v remote_env '%s %s=%q' "$remote_env" "$name" "${!name}"
done
printf -v remote_env '%s DEPLOY_ACTOR=%q DEPLOY_RUN_ID=%q' "$remote_env" "${GITHUB_ACTOR:-$(id -un)}" "${GITHUB_RUN_ID:-manual}"
ref_arg=""
[[ -n "$ref" ]] && printf -v ref_arg ' --ref %q' "$ref"
echo "deploy-remote: deploying $environment to $target:$project"
# shellcheck disable=SC2029  # expanded here on purpose: the path is quoted with %q above
secrets | ssh "${ssh_opts[@]}" "$target" \
    "cd $remote_dir && env$remote_env ./scripts/deploy.sh $environment$ref_arg --secrets-stdin"

# deploy.sh ran the deep check on the new colour's admin listener; this one goes through the proxy.
echo "deploy-remote: verifying http://127.0.0.1:$health_port/health on the server"
# shellcheck disable=SC2029  # the port is expanded here on purpose
ssh "${ssh_opts[@]}" "$target" "curl -fsS --max-time 20 'http://127.0.0.1:$health_port/health'" </dev/null
echo
echo "deploy-remote: $environment is healthy"
