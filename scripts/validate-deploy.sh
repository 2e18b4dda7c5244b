#!/usr/bin/env bash
# Offline validation of the deploy artifacts (no Docker, no kubectl, no cluster):
#   scripts/validate-deploy.sh            everything below
#   scripts/validate-deploy.sh routes     deploy/nginx/nginx.conf and deploy/k8s/base/ingress.yaml
#                                         match the services' route table (scripts/gen-routes.py --check)
#   scripts/validate-deploy.sh compose    dclint (compose-spec schema + lint rules) on deploy/compose.yaml
#   scripts/validate-deploy.sh k8s        render every kustomize target, validate with kubernetes-validate
#   scripts/validate-deploy.sh tools      install dclint (npm) into the tools cache, print its path
# dclint is installed once from the npm registry into $AXON_DEPLOY_TOOLS
# (default ~/.cache/axon-deploy-tools); kubernetes-validate comes from the test extras.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
DCLINT_VERSION=3.1.0
TOOLS=${AXON_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/axon-deploy-tools}
export AXON_DEPLOY_TOOLS=$TOOLS

tools() {
  local bin=$TOOLS/node_modules/.bin/dclint
  if [ ! -x "$bin" ] || ! grep -q "\"version\": \"$DCLINT_VERSION\"" "$TOOLS/node_modules/dclint/package.json"; then
    command -v npm >/dev/null || { echo "validate-deploy: npm is needed for dclint (Debian: apt-get install npm)" >&2; return 1; }
    mkdir -p "$TOOLS"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS" "dclint@$DCLINT_VERSION" >&2
  fi
  echo "$bin"
}

routes() {
  "$PY" "$ROOT/scripts/gen-routes.py" --check
  echo "routes: deploy/nginx/nginx.conf and deploy/k8s/base/ingress.yaml match the route table"
}

compose() {
  local bin
  bin=$(tools)
  # Run from a neutral directory so no stray dclint config is picked up.
  (cd "$TOOLS" && "$bin" --no-color -c "$ROOT/deploy/dclint.json" --max-warnings 0 "$ROOT/deploy/compose.yaml")
  echo "compose: dclint $DCLINT_VERSION clean"
}

k8s() {
  (cd "$ROOT" && "$PY" -m tests.deploy.validate)
}

case "${1:-all}" in
  all) routes; compose; k8s ;;
  routes) routes ;;
  compose) compose ;;
  k8s) k8s ;;
  tools) tools ;;
  *) echo "usage: $0 [all|routes|compose|k8s|tools]" >&2; exit 2 ;;
esac
