"""The units' launcher: each unit's command goes straight to its module, anything else to the CLI.

Run as the units run it (support.unit_command: the launcher, pointed at this
checkout, through its own #! line), with `-X importtime` added to see which
modules a start loads.
"""

from __future__ import annotations

import subprocess
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
    assert "pbs_activated.policy" in imported
    assert "pbs_activated.cli" not in imported and "argparse" not in imported


def test_policy_server_starts_the_server_without_the_command_line(tmp_path: Path) -> None:
    result, imported = launch(tmp_path, "policy-server")
    assert result.returncode == 2  # no socket from systemd here
    assert "no socket passed by systemd" in result.stderr
    assert "pbs_activated.server" in imported
    assert "pbs_activated.cli" not in imported


def test_any_other_command_line_is_the_full_one(tmp_path: Path) -> None:
    result, imported = launch(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"pbs-activated {__version__}"
    assert "pbs_activated.cli" in imported
    result, _ = launch(tmp_path, "--config", str(tmp_path / "absent.toml"), "policy")
    assert result.returncode == 0


def test_the_collector_is_back_on_once_the_imports_are_done(tmp_path: Path) -> None:
    """gc.disable() covers the imports only (a handler may live 1000 s); what they
    made is frozen out of later passes. Seen by a stand-in for the package."""
    package = tmp_path / "packages" / "pbs_activated"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "policy.py").write_text(
        "import gc\n"
        "def main():\n"
        "    print(gc.isenabled(), gc.get_freeze_count() > 0)\n"
        "    return 0\n"
    )
    launcher = tmp_path / "policy"
    launcher.write_text(
        LAUNCHER_SOURCE.read_text().replace(INSTALLED_PACKAGES, str(package.parent))
    )
    launcher.chmod(0o755)
    result = subprocess.run(
        [str(launcher), "policy"], capture_output=True, text=True, timeout=30, env=ENVIRONMENT
    )
    assert result.stdout.split() == ["True", "True"], result.stderr
