"""Several remote commands in one SSH exec: one round trip, one start-up of the account's shell.

sshd starts the account's shell for every exec, and that shell reads its start-up files
(bash reads ~/.bashrc even for ``bash -c`` when sshd started it); on a host whose .bashrc
does real work every command pays for it. A probe round of a gather therefore sends its
commands as ONE fixed script (``BATCH_SH``) whose positional arguments are, per command,
its ``shlex.join``-ed argv (run with ``eval``: shlex.join's quoting makes every element one
literal word again) and its stdin. The script runs them one after the other and frames each
answer between lines carrying a random nonce:

    NONCE I out\\n<stdout, at most MAX bytes>\\nNONCE I err\\n<stderr, at most MAX bytes>\\n
    NONCE I rc STATUS STDOUT_BYTES STDERR_BYTES\\n

then ``NONCE end COUNT``. A command's own output cannot fake a frame (it does not know the
nonce); a frame cut short (the connection dropped, the batch timed out) leaves that command,
and those after it, without an answer: ``BatchAnswers.result`` raises ``CommandFailed`` for
them, never a made-up result. Output above ``MAX`` bytes is cut and the result says so.

``Step`` pairs a command with the parser of its result, so a probe can run alone
(``run_step``) or in a batch (``run_steps``) and mean the same. No Django here.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import AdapterError, CommandFailed
from .ssh import CommandResult

MAX_OUTPUT_BYTES = 256 * 1024  # per command and stream; a probe prints a few KiB
MAX_COMMANDS = 64

BATCH_SH = r"""
nonce=$1 max=$2
shift 2
d=$(mktemp -d) || exit 1
trap 'rm -rf -- "$d"' EXIT
i=0
while [ "$#" -ge 2 ]; do
  printf '%s' "$2" > "$d/in"
  ( eval "$1" ) < "$d/in" > "$d/out" 2> "$d/err"
  rc=$?
  printf '%s %s out\n' "$nonce" "$i"; head -c "$max" "$d/out"
  printf '\n%s %s err\n' "$nonce" "$i"; head -c "$max" "$d/err"
  printf '\n%s %s rc %s %s %s\n' "$nonce" "$i" "$rc" "$(wc -c < "$d/out")" "$(wc -c < "$d/err")"
  i=$((i + 1))
  shift 2
done
printf '%s end %s\n' "$nonce" "$i"
"""


@dataclass(frozen=True)
class Step:
    """One remote command and how to read its result (``parse`` may raise our adapter errors)."""

    argv: list[str]
    parse: Callable[[CommandResult], Any]
    stdin: str = ""
    timeout: float = 10.0


def batch_argv(steps: Sequence[Step], nonce: str, max_bytes: int = MAX_OUTPUT_BYTES) -> list[str]:
    """The argv that runs ``steps`` in one exec."""
    args: list[str] = []
    for step in steps:
        if not step.argv or not all(isinstance(a, str) for a in step.argv):
            raise TypeError("a step's argv must be a non-empty list of strings")
        args += [shlex.join(step.argv), step.stdin or ""]
    return ["sh", "-c", BATCH_SH, "batch", nonce, str(max_bytes), *args]


def format_answers(nonce: str, results: Sequence[CommandResult]) -> str:
    """What BATCH_SH prints for these results (whole ones): for fakes and tests."""
    parts = []
    for i, r in enumerate(results):
        parts.append(f"{nonce} {i} out\n{r.stdout}\n{nonce} {i} err\n{r.stderr}\n"
                     f"{nonce} {i} rc {r.exit_status} {len(r.stdout.encode())} {len(r.stderr.encode())}\n")
    return "".join(parts) + f"{nonce} end {len(results)}\n"


@dataclass(frozen=True)
class BatchAnswers:
    """The framed answers of one batch: ``result(i)`` per command asked."""

    steps: tuple[Step, ...]
    results: tuple[CommandResult | None, ...]
    complete: bool  # the script's end line came

    def result(self, index: int) -> CommandResult:
        """Command ``index``'s result; CommandFailed when the batch's output ended before its frame did."""
        found = self.results[index]
        if found is None:
            raise CommandFailed(self.steps[index].argv, -1, "",
                                "no answer: the batched commands' output ended before this one's")
        return found


def parse_answers(output: str, nonce: str, steps: Sequence[Step], duration_s: float = 0.0,
                  max_bytes: int = MAX_OUTPUT_BYTES) -> BatchAnswers:
    """Cut BATCH_SH's output into one CommandResult per step (pure; see the module docstring)."""
    results: list[CommandResult | None] = []
    pos = 0
    for i, step in enumerate(steps):
        found = _frame(output, pos, nonce, i)
        if found is None:
            results += [None] * (len(steps) - i)
            break
        stdout, stderr, status, out_bytes, err_bytes, pos = found
        results.append(CommandResult(
            argv=list(step.argv), exit_status=status, stdout=stdout, stderr=stderr, duration_s=duration_s,
            truncated=out_bytes > max_bytes or err_bytes > max_bytes,
        ))
    whole = all(r is not None for r in results) and f"{nonce} end {len(steps)}\n" in output[pos:]
    return BatchAnswers(steps=tuple(steps), results=tuple(results), complete=whole)


def _frame(output: str, pos: int, nonce: str, i: int):
    head_out = f"{nonce} {i} out\n"
    head_err = f"\n{nonce} {i} err\n"
    head_rc = f"\n{nonce} {i} rc "
    start = output.find(head_out, pos)
    if start < 0 or (start > 0 and output[start - 1] != "\n"):
        return None
    a = start + len(head_out)
    b = output.find(head_err, a)
    if b < 0:
        return None
    c = output.find(head_rc, b + len(head_err))
    if c < 0:
        return None
    end = output.find("\n", c + len(head_rc))
    if end < 0:
        return None
    fields = output[c + len(head_rc):end].split()
    if len(fields) != 3 or not all(f.lstrip("-").isdigit() for f in fields):
        return None
    status, out_bytes, err_bytes = (int(f) for f in fields)
    return output[a:b], output[b + len(head_err):c], status, out_bytes, err_bytes, end + 1


def run_step(session, step: Step):
    """Run one step alone and parse its result."""
    return step.parse(session.run(step.argv, check=False, stdin=step.stdin or None, timeout=step.timeout))


def run_steps(session, steps: Sequence[Step], *, max_bytes: int = MAX_OUTPUT_BYTES) -> list[Any]:
    """Run ``steps`` in one exec; per step its parsed value, or the AdapterError its parsing raised.

    One step alone runs as itself. Errors of the exec as a whole (the host unreachable, a
    timeout) propagate. At most MAX_COMMANDS steps.
    """
    steps = list(steps)
    if len(steps) > MAX_COMMANDS:
        raise ValueError(f"at most {MAX_COMMANDS} commands in one batch, not {len(steps)}")
    if len(steps) == 1:
        try:
            return [run_step(session, steps[0])]
        except AdapterError as exc:
            return [exc]
    nonce = secrets.token_hex(12)
    argv = batch_argv(steps, nonce, max_bytes)
    out = session.run(argv, check=False, timeout=sum(s.timeout for s in steps))
    answers = parse_answers(out.stdout, nonce, steps, out.duration_s, max_bytes)
    if not any(answers.results):
        raise CommandFailed(["sh", "-c", "(batched commands)"], out.exit_status, out.stdout[-2000:], out.stderr)
    values: list[Any] = []
    for i, step in enumerate(steps):
        try:
            values.append(step.parse(answers.result(i)))
        except AdapterError as exc:
            values.append(exc)
    return values

