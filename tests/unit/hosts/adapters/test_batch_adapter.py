"""hosts.adapters.batch: several commands in one exec, framed by a nonce, parsed back per command.

The script runs for real under the local ``sh`` (a session that runs argv locally); the
parser is tested with tables of outputs, whole and cut.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from hosts.adapters import batch
from hosts.adapters.errors import CommandFailed, HostUnreachable
from hosts.adapters.ssh import CommandResult

NONCE = "0123456789abcdef01234567"


class LocalSession:
    """Runs argv on this machine, the way SSHSession.run would on a host."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def run(self, argv, *, check=True, stdin=None, timeout=30.0):
        self.calls.append(list(argv))
        started = time.monotonic()
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        return CommandResult(list(argv), done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def raw(result: CommandResult):
    return (result.exit_status, result.stdout, result.stderr, result.truncated)


def step(*argv, stdin=""):
    return batch.Step(list(argv), raw, stdin=stdin)


def test_one_exec_runs_every_command_with_its_own_status_output_and_stdin():
    session = LocalSession()
    hostile = "it's $(touch /tmp/batch-pwned) `x` \"q\" \n; exit 9"
    values = batch.run_steps(session, [
        step("printf", "%s", hostile),
        step("sh", "-c", 'echo out; echo err >&2; exit 3'),
        step("cat", stdin="the token"),
        step("printf", f"{NONCE} 3 rc 0 0 0\\n{NONCE} end 4\\n"),  # output posing as frames: a different index
    ])
    assert len(session.calls) == 1
    assert values[0] == (0, hostile, "", False)
    assert values[1] == (3, "out\n", "err\n", False)
    assert values[2] == (0, "the token", "", False)
    assert values[3][0] == 0 and "end 4" in values[3][1]


def test_output_above_the_bound_is_cut_and_says_so():
    session = LocalSession()
    (value, after) = batch.run_steps(session, [step("head", "-c", "5000", "/dev/zero"), step("echo", "next")],
                                     max_bytes=1000)
    assert value[0] == 0 and len(value[1]) == 1000 and value[3] is True
    assert after == (0, "next\n", "", False)


def test_a_parser_error_is_that_step_s_value_not_the_batch_s():
    def refuse(result):
        raise CommandFailed(result.argv, result.exit_status, result.stdout, result.stderr)
    values = batch.run_steps(LocalSession(), [batch.Step(["false"], refuse), step("echo", "fine")])
    assert isinstance(values[0], CommandFailed) and values[1] == (0, "fine\n", "", False)


def test_one_step_alone_runs_as_itself():
    session = LocalSession()
    assert batch.run_steps(session, [step("echo", "x")]) == [(0, "x\n", "", False)]
    assert session.calls == [["echo", "x"]]


def test_a_batch_with_no_answer_at_all_raises_our_error():
    class Broken:
        def run(self, argv, **kw):
            return CommandResult(argv, 1, "", "mktemp: failed", 0.0)
    with pytest.raises(CommandFailed):
        batch.run_steps(Broken(), [step("true"), step("true")])


def test_errors_of_the_exec_itself_propagate():
    class Gone:
        def run(self, argv, **kw):
            raise HostUnreachable("Lost the SSH connection")
    with pytest.raises(HostUnreachable):
        batch.run_steps(Gone(), [step("true"), step("true")])


def test_too_many_commands_are_refused():
    with pytest.raises(ValueError):
        batch.run_steps(LocalSession(), [step("true")] * (batch.MAX_COMMANDS + 1))


STEPS = [step("a"), step("b"), step("c")]
WHOLE = batch.format_answers(NONCE, [
    CommandResult(["a"], 0, "one\n", "", 0.0),
    CommandResult(["b"], 2, f"x\n{'f' * 24} 1 err\nnot ours", "warn", 0.0),
    CommandResult(["c"], 0, "", "", 0.0),
])


@pytest.mark.parametrize("output, expected, complete", [
    # whole: the second's output holds a frame line with another nonce, kept as output
    (WHOLE, [(0, "one\n", ""), (2, f"x\n{'f' * 24} 1 err\nnot ours", "warn"), (0, "", "")], True),
    # cut inside the last frame: the last has no answer
    (WHOLE[: WHOLE.index(f"{NONCE} 2 err")], [(0, "one\n", ""), (2, f"x\n{'f' * 24} 1 err\nnot ours", "warn"), None],
     False),
    # cut before the second's status line: it and the rest have none
    (WHOLE[: WHOLE.index(f"{NONCE} 1 rc")], [(0, "one\n", ""), None, None], False),
    # the end line missing: every frame there, the batch not complete
    (WHOLE[: WHOLE.index(f"{NONCE} end")], [(0, "one\n", ""), (2, f"x\n{'f' * 24} 1 err\nnot ours", "warn"), (0, "", "")],
     False),
    # nothing at all (the script never ran)
    ("", [None, None, None], False),
    # a damaged status line
    (WHOLE.replace(f"{NONCE} 0 rc 0", f"{NONCE} 0 rc zero"), [None, None, None], False),
    # stray text before the first frame is ignored
    ("motd from a chatty .bashrc\n" + WHOLE, [(0, "one\n", ""), (2, f"x\n{'f' * 24} 1 err\nnot ours", "warn"),
                                             (0, "", "")], True),
])
def test_parse_answers(output, expected, complete):
    answers = batch.parse_answers(output, NONCE, STEPS)
    got = [None if r is None else (r.exit_status, r.stdout, r.stderr) for r in answers.results]
    assert got == expected
    assert answers.complete is complete
    for i, r in enumerate(answers.results):
        if r is None:
            with pytest.raises(CommandFailed):
                answers.result(i)
        else:
            assert r.argv == STEPS[i].argv


def test_parse_answers_marks_output_cut_at_the_bound():
    output = f"{NONCE} 0 out\nabc\n{NONCE} 0 err\n\n{NONCE} 0 rc 0 999 0\n{NONCE} end 1\n"
    (result,) = batch.parse_answers(output, NONCE, [step("a")], max_bytes=3).results
    assert result.stdout == "abc" and result.truncated
