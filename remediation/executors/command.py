"""command: run a program from an argv list, never through a shell.

``params.argv`` is a list of strings. Items after the first may contain ``{{ labels.NAME }}``;
a label value is inserted only when it matches :data:`SAFE_LABEL_VALUE` (letters, digits and
``_ . : -``, not starting with ``-`` so a value cannot smuggle in an option such as
``--privileged``). The program (argv[0]) must be one the operator allows in
``AUTOHEAL_COMMAND_ALLOW`` (absolute paths; a bare name is resolved through ``PATH`` first).
Anything else refuses the action and nothing runs. The program runs in its own
process group with a minimal environment; on timeout the whole group is killed. Its exit status,
stdout and stderr (truncated) go into the audit event.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from typing import Any

from django.conf import settings

from remediation.executors import ExecResult, JobSpec, NotAllowed, timeout_for, truncate
from remediation.trust import NotPermitted, command_program

SAFE_LABEL_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_PLACEHOLDER = re.compile(r"\{\{\s*labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_TEMPLATE_SYNTAX = re.compile(r"\{\{|\}\}|\{%|%\}")
MAX_ARGS = 64


def render_argv(argv: Any, labels: dict[str, str]) -> list[str]:
    """The exact argv that would run, or NotAllowed naming the item that is refused."""
    if not isinstance(argv, list) or not argv or not all(isinstance(item, str) for item in argv):
        raise NotAllowed("params.argv must be a non-empty list of strings")
    if len(argv) > MAX_ARGS:
        raise NotAllowed(f"params.argv has more than {MAX_ARGS} items")
    if _TEMPLATE_SYNTAX.search(argv[0]) or not argv[0]:
        raise NotAllowed("params.argv[0] must be a literal program name, without placeholders")
    rendered = [argv[0]]
    for index, item in enumerate(argv[1:], start=1):
        rendered.append(_render_item(index, item, labels))
    return rendered


def _render_item(index: int, item: str, labels: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in labels:
            raise NotAllowed(f"params.argv[{index}] needs the label {name}, which the alert does not have")
        value = labels[name]
        if not SAFE_LABEL_VALUE.fullmatch(value):
            raise NotAllowed(
                f"params.argv[{index}]: the value of label {name} is not safe for a command argument "
                f"(allowed: {SAFE_LABEL_VALUE.pattern})"
            )
        return value

    result = _PLACEHOLDER.sub(substitute, item)
    # Only the labels.NAME form is a placeholder; any other template syntax is refused.
    if _TEMPLATE_SYNTAX.search(_PLACEHOLDER.sub("", item)):
        raise NotAllowed(f"params.argv[{index}] has template syntax other than {{{{ labels.NAME }}}}")
    return result


def program_path(program: str) -> str:
    """The absolute path argv[0] runs, or NotAllowed when it is not in ``AUTOHEAL_COMMAND_ALLOW``."""
    try:
        return command_program(program, allow=settings.AUTOHEAL_COMMAND_ALLOW, path=_path())
    except NotPermitted as exc:
        raise NotAllowed(str(exc)) from None


def _path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")


def check(spec: JobSpec) -> None:
    """Render the argv (refusing unsafe label values), check the program and the timeout."""
    argv = render_argv(spec.params.get("argv"), spec.labels)
    program_path(argv[0])
    timeout_for(spec)


def execute(spec: JobSpec, *, timeout: float) -> ExecResult:
    """Run the program; exit status 0 is success. A timeout kills its process group."""
    argv = render_argv(spec.params.get("argv"), spec.labels)
    program = program_path(argv[0])
    env = {"PATH": _path(), "LANG": "C.UTF-8"}
    try:
        process = subprocess.Popen(
            argv,
            executable=program,  # the allowed path that was checked, whatever PATH says later
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            shell=False,
        )
    except OSError as exc:
        return ExecResult(ok=False, detail=f"cannot start {argv[0]}: {exc.strerror}", output={"argv": argv})
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        # The program may have started children: kill the whole group it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    output = {
        "argv": argv,
        "pid": process.pid,
        "exit_code": process.returncode,
        "stdout": truncate(stdout.decode("utf-8", errors="replace")),
        "stderr": truncate(stderr.decode("utf-8", errors="replace")),
    }
    if timed_out:
        return ExecResult(ok=False, detail=f"timed out after {timeout:g}s; process group killed", output=output)
    if process.returncode != 0:
        return ExecResult(ok=False, detail=f"exited with status {process.returncode}", output=output)
    return ExecResult(ok=True, detail="exited with status 0", output=output)
