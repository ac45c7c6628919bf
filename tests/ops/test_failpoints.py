import signal
import subprocess
import sys

import pytest

from ops.failpoints import ENV_VAR, parse_failpoints
from tests.conftest import REPO_ROOT


def test_parse_names_the_pass_of_each_failpoint_and_rejects_what_is_not_name_equals_n():
    assert parse_failpoints("shard_marked=2, other=1") == {"shard_marked": 2, "other": 1}
    for bad in ("shard_marked", "shard_marked=0", "shard_marked=x"):
        with pytest.raises(ValueError, match=ENV_VAR):
            parse_failpoints(bad)


SCRIPT = "from ops.failpoints import failpoint\nfor i in range(5):\n    failpoint('p')\n    print(i)\n"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60)


def test_a_process_dies_by_sigkill_at_the_named_pass_and_not_before():
    killed = _run({ENV_VAR: "other=1,p=3"})
    assert killed.returncode == -signal.SIGKILL and killed.stdout.split() == ["0", "1"]
    unset = _run({})
    assert unset.returncode == 0 and unset.stdout.split() == ["0", "1", "2", "3", "4"]
