"""The units' launcher: each unit's command goes straight to its module, anything else to the CLI.

Run as the units run it (support.unit_command: the launcher, pointed at this
checkout, through its own #! line), with `-X importtime` added to see which
modules a start loads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import INSTALLED_PACKAGES, LAUNCHER_SOURCE, unit_command

from pbs_activated import __version__

ENVIRONMENT = {"PATH": "/usr/bin:/bin", "PBS_ACTIVATED_JOURNAL_SOCKET": "/nonexistent"}


def launch(tmp_path: Path, *arguments: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the launcher with `arguments`, stdin empty; return the result and what it imported."""
    launcher = unit_command("pbs-policy@.service", tmp_path)[0]
    interpreter = Path(launcher).read_text().splitlines()[0].removeprefix("#!").split()
    result = subprocess.run(
        [*interpreter, "-X", "importtime", launcher, *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env={**ENVIRONMENT, "PBS_ACTIVATED_CONFIG": str(tmp_path / "absent.toml")},
    )
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return result, imported


def test_policy_starts_the_handler_without_the_command_line(tmp_path: Path) -> None:
    result, imported = launch(tmp_path, "policy")
    assert result.returncode == 0  # EOF at once: nothing to answer
    assert "pbs_activated.answer.handler" in imported
    assert "pbs_activated.admin.cli" not in imported and "argparse" not in imported
    assert "os" not in imported  # ~1 ms of every start (defaults.environment)


def test_policy_server_starts_the_server_without_the_command_line(tmp_path: Path) -> None:
    result, imported = launch(tmp_path, "policy-server")
    assert result.returncode == 2  # no socket from systemd here
    assert "no socket passed by systemd" in result.stderr
    assert "pbs_activated.answer.server" in imported
    assert "pbs_activated.admin.cli" not in imported


def test_any_other_command_line_is_the_full_one(tmp_path: Path) -> None:
    result, imported = launch(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"pbs-activated {__version__}"
    assert "pbs_activated.admin.cli" in imported
    result, _ = launch(tmp_path, "--config", str(tmp_path / "absent.toml"), "policy")
    assert result.returncode == 0


def stand_in(tmp_path: Path, policy_source: str) -> subprocess.CompletedProcess[str]:
    """Run the launcher's `policy` against a stand-in package whose answer/handler.py is given."""
    package = tmp_path / "packages" / "pbs_activated"
    (package / "answer").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "answer" / "__init__.py").write_text("")
    (package / "answer" / "handler.py").write_text(policy_source)
    launcher = tmp_path / "policy"
    source = LAUNCHER_SOURCE.read_text()
    launcher.write_text(source.replace(INSTALLED_PACKAGES, str(package.parent)))
    launcher.chmod(0o755)
    return subprocess.run(
        [str(launcher), "policy"], capture_output=True, text=True, timeout=30, env=ENVIRONMENT
    )


def test_the_collector_is_back_on_once_the_imports_are_done(tmp_path: Path) -> None:
    """gc.disable() covers the imports only (a handler may live 1000 s); what they
    made is frozen out of later passes."""
    result = stand_in(
        tmp_path,
        "import gc\ndef main():\n    print(gc.isenabled(), gc.get_freeze_count() > 0)\n"
        "    return 0\n",
    )
    assert result.stdout.split() == ["True", "True"], result.stderr


def test_a_handler_ending_without_teardown_keeps_its_status_and_its_output(
    tmp_path: Path,
) -> None:
    """os._exit skips the teardown, not the buffered output (a pipe buffers stdout)."""
    result = stand_in(
        tmp_path,
        "import sys\ndef main():\n    print('to stdout')\n    print('to stderr', file=sys.stderr)\n"
        "    return 3\n",
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, "to stdout\n", "to stderr\n")


def test_a_handler_that_raises_ends_as_usual_with_its_traceback(tmp_path: Path) -> None:
    result = stand_in(tmp_path, "def main():\n    raise RuntimeError('a bug')\n")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr


def test_the_package_is_found_after_the_standard_library_and_before_lib_dynload(
    tmp_path: Path,
) -> None:
    """Nothing of dist-packages hides the standard library, and finding the package lists
    no lib-dynload: the handler imports no C module from there."""
    program = "import sys\ndef main():\n    print('|'.join(sys.path))\n    return 0\n"
    path = stand_in(tmp_path, program).stdout.strip().split("|")
    found = path.index(str(tmp_path / "packages"))
    assert path[found - 1] == f"/usr/lib/python3.{sys.version_info.minor}", path
    assert path[found + 1 :] == [f"/usr/lib/python3.{sys.version_info.minor}/lib-dynload"], path
