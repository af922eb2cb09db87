#!/usr/bin/env bash
# bandit: no finding of medium severity or above unless it is explained where it occurs, as
# `# nosec BXXX: why this is safe` on the flagged line. Configuration: [tool.bandit] in pyproject.toml
# (tests, benchmarks and the virtualenv are excluded).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/bandit -q -r . -c pyproject.toml --severity-level medium
# A bare `# nosec` (no test id, no reason) would silence everything on its line: refuse it.
if grep -rnE --include='*.py' '#\s*nosec\b(\s*$|\s+[^B ])' --exclude-dir=.venv --exclude-dir=node_modules --exclude-dir=.services . ; then
  echo "bandit gate: every '# nosec' must name the test and say why (# nosec BXXX: reason)" >&2
  exit 1
fi
if grep -rnE --include='*.py' '#\s*nosec\s+B[0-9]+\s*$' --exclude-dir=.venv --exclude-dir=node_modules --exclude-dir=.services . ; then
  echo "bandit gate: '# nosec BXXX' needs a reason after a colon (# nosec BXXX: reason)" >&2
  exit 1
fi
