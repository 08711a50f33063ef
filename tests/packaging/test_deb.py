"""What the .deb holds and declares, read with dpkg-deb: `dpkg -I` and `dpkg -c` checks.

The package runs Debian's python3 with Debian's python3-redis and python3-systemd;
dh_python3 derives those dependencies from pyproject.toml and byte-compiles at
install time, so the archive itself holds sources only.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from debpackage import debian_environment, project_version, run
from support import REPO

UNITS = (
    "pbs-policy.socket",
    "pbs-policy@.service",
    "pbs-policy-server.socket",
    "pbs-policy-server.service",
    "pbs-policy.path",
    "pbs-policy-server.path",
    "pbs-journal.service",
    "pbs-store.service",
    "pbs-store-admin.socket",
    "pbs-store-admin.service",
)
UNIT_DIRECTORY = "usr/lib/systemd/system"
CONFFILE = "/etc/pbs-activated/pbs-activated.toml"


def field(deb: Path, name: str) -> str:
    result = run(["dpkg-deb", "-f", str(deb), name])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def relations(deb: Path, name: str) -> list[str]:
    """A relation field as a list of alternatives groups, version constraints dropped."""
    groups = []
    for group in field(deb, name).split(","):
        alternatives = [part.split("(")[0].strip() for part in group.split("|")]
        groups.append(" | ".join(alternatives))
    return groups


def contents(deb: Path) -> list[str]:
    """Paths in the archive (`dpkg -c`), without the leading `.`."""
    result = run(["dpkg-deb", "-c", str(deb)])
    assert result.returncode == 0, result.stderr
    return [
        line.split(None, 5)[5].removeprefix(".").split(" -> ")[0]
        for line in result.stdout.splitlines()
    ]


def test_package_file_is_named_after_the_pyproject_version(deb: Path) -> None:
    assert deb.name == f"pbs-activated_{project_version()}_all.deb"
    assert field(deb, "Package") == "pbs-activated"
    assert field(deb, "Version") == project_version()
    assert field(deb, "Architecture") == "all"


def test_package_information_is_readable_by_dpkg(deb: Path) -> None:
    result = run(["dpkg", "-I", str(deb)])
    assert result.returncode == 0, result.stderr
    assert "Description: POP-before-SMTP relay authorization for Postfix" in result.stdout


def test_depends_on_debian_python_with_debian_redis_and_systemd_modules(deb: Path) -> None:
    depends = relations(deb, "Depends")
    assert "python3-redis" in depends
    assert "python3-systemd" in depends
    assert "python3:any" in depends


def test_depends_on_debian_python_adduser_and_a_store_server_binary_only(deb: Path) -> None:
    assert sorted(relations(deb, "Depends")) == [
        "adduser",
        "python3-redis",
        "python3-systemd",
        "python3:any",
        "redis-tools | valkey-tools",
    ]
    assert "redis-tools (>= 5:7.0)" in field(deb, "Depends")  # PEXPIRETIME needs Redis 7


def test_never_pulls_in_a_redis_or_valkey_instance_open_to_local_users(deb: Path) -> None:
    """redis-server and valkey-server start their own instance on 127.0.0.1:6379."""
    related = [relation for kind in ("Depends", "Recommends") for relation in relations(deb, kind)]
    assert not [r for r in related if "redis-server" in r or "valkey-server" in r]


def test_suggests_postfix_and_a_pop_server(deb: Path) -> None:
    suggests = relations(deb, "Suggests")
    assert "postfix" in suggests
    assert "dovecot-pop3d | courier-pop" in suggests


def test_console_script_runs_debian_python(unpacked: Path) -> None:
    script = unpacked / "usr/bin/pbs-activated"
    assert script.stat().st_mode & 0o111
    assert script.read_text().splitlines()[0] == "#!/usr/bin/python3"


def test_packaged_command_reports_the_version(unpacked: Path) -> None:
    environment = debian_environment() | {
        "PYTHONPATH": str(unpacked / "usr/lib/python3/dist-packages")
    }
    result = subprocess.run(
        [str(unpacked / "usr/bin/pbs-activated"), "--version"],
        capture_output=True,
        text=True,
        env=environment,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pbs-activated {project_version()}"


def test_every_module_of_the_source_tree_is_in_debian_dist_packages(deb: Path) -> None:
    """Subpackages are found by setuptools, not listed: one that fell out of the wheel
    would leave the tests of the source tree passing and the installed command broken."""
    source = {
        f"/usr/lib/python3/dist-packages/{path.relative_to(REPO).as_posix()}"
        for path in (REPO / "pbs_activated").rglob("*.py")
    }
    shipped = {path for path in contents(deb) if path.endswith(".py")}
    assert len(source) > 50
    assert source - shipped == set()
    assert {path for path in shipped if "/pbs_activated/" in path} == source


def test_no_bytecode_and_no_virtualenv_inside(deb: Path) -> None:
    paths = contents(deb)
    assert not [path for path in paths if path.endswith((".pyc", ".pyo")) or "__pycache__" in path]
    assert not [path for path in paths if path.endswith(("/pyvenv.cfg", "/bin/activate"))]
    assert not [path for path in paths if "site-packages" in path]


@pytest.mark.parametrize("unit", UNITS)
def test_ships_the_unit_as_written_in_the_source(unpacked: Path, unit: str) -> None:
    assert (unpacked / UNIT_DIRECTORY / unit).read_text() == (REPO / "units" / unit).read_text()


def test_ships_the_documented_conffile(unpacked: Path, control: Path) -> None:
    shipped = unpacked / CONFFILE.lstrip("/")
    assert shipped.read_text() == (REPO / "packaging/pbs-activated.toml").read_text()
    assert CONFFILE in (control / "conffiles").read_text().split()


def test_ships_the_man_pages(deb: Path) -> None:
    paths = contents(deb)
    assert "/usr/share/man/man8/pbs-activated.8.gz" in paths
    assert "/usr/share/man/man5/pbs-activated.toml.5.gz" in paths


def test_ships_the_examples(deb: Path) -> None:
    paths = contents(deb)
    for example in sorted((REPO / "docs/examples").iterdir()):
        assert f"/usr/share/doc/pbs-activated/examples/{example.name}" in paths


def test_installing_byte_compiles_with_debian_python(control: Path) -> None:
    assert "py3compile -p pbs-activated" in (control / "postinst").read_text()


@pytest.mark.parametrize("unit", ["pbs-policy.socket", "pbs-journal.service"])
def test_installing_enables_and_starts_the_unit(control: Path, unit: str) -> None:
    postinst = (control / "postinst").read_text()
    assert f"deb-systemd-helper enable '{unit}'" in postinst
    assert f"deb-systemd-invoke start '{unit}'" in postinst or (
        f"deb-systemd-invoke $_dh_action '{unit}'" in postinst
    )


@pytest.mark.parametrize("unit", ["pbs-policy.socket", "pbs-journal.service"])
def test_an_administrators_disable_survives_upgrades(control: Path, unit: str) -> None:
    """deb-systemd-helper enables only a unit that was never disabled by hand."""
    postinst = (control / "postinst").read_text()
    assert f"if deb-systemd-helper --quiet was-enabled '{unit}'; then" in postinst


def test_the_handler_template_is_started_by_its_socket_only(control: Path) -> None:
    """The scripts never start, enable or restart a handler; during an upgrade they stop
    the running ones (which would import from the files dpkg replaces), nothing else."""
    for script in ("preinst", "postinst", "prerm", "postrm"):
        lines = [
            line for line in (control / script).read_text().splitlines() if "pbs-policy@" in line
        ]
        for line in lines:
            assert "start" not in line and "enable" not in line, line
            assert "stop 'pbs-policy@*.service'" in line or "UPGRADE_DROPIN=" in line, line


def test_an_upgrade_serves_handlers_from_a_copy_of_the_old_version_until_postinst(
    control: Path,
) -> None:
    """preinst puts the drop-in and the copy in place and stops the running handlers;
    postinst, or postrm when the upgrade is abandoned, takes them away again."""
    preinst = (control / "preinst").read_text()
    assert 'if [ "$1" = "upgrade" ]; then\n    serve_from_a_copy\nfi' in preinst
    for script, argument in (("postinst", "configure"), ("postrm", "abort-upgrade")):
        text = (control / script).read_text()
        assert f'if [ "$1" = "{argument}" ] && [ -e "$UPGRADE_DROPIN" ]; then' in text
        assert 'rm -rf "$UPGRADE_COPY"' in text


def test_the_socket_keeps_listening_through_an_upgrade(control: Path) -> None:
    """Each connection runs the new code anyway; a restart would fail Postfix's clients."""
    assert "restart" not in _section_for(control / "postinst", "pbs-policy.socket")
    prerm = (control / "prerm").read_text()
    assert '[ "$1" = remove ]' in _section_for(control / "prerm", "pbs-policy.socket")
    assert "deb-systemd-invoke stop 'pbs-policy.socket'" in prerm


def test_the_server_socket_is_never_enabled_by_the_package(control: Path) -> None:
    """The one-process socket is the administrator's choice: debhelper's --no-enable
    snippet enables it only again, on upgrade, where the administrator had enabled it."""
    section = _section_for(control / "postinst", "'pbs-policy-server.socket'")
    guarded = section.split("if deb-systemd-helper debian-installed 'pbs-policy-server.socket'")
    assert len(guarded) == 2 and "enable 'pbs-policy-server.socket'" not in guarded[0]
    assert "new installations run enable" not in section


def test_the_server_socket_keeps_listening_through_an_upgrade(control: Path) -> None:
    assert "restart" not in _section_for(control / "postinst", "'pbs-policy-server.socket'")
    assert "deb-systemd-invoke stop 'pbs-policy-server.socket'" in (control / "prerm").read_text()
    preinst = control / "preinst"
    assert not preinst.exists() or "pbs-policy-server" not in preinst.read_text()


def test_an_upgrade_restarts_the_server_only_if_it_runs(control: Path) -> None:
    """A long-lived server runs the old code until restarted; a stopped one stays stopped."""
    section = _section_for(control / "postinst", "'pbs-policy-server.service'")
    assert "deb-systemd-invoke try-restart 'pbs-policy-server.service'" in section
    assert 'if [ -n "$2" ]; then' in section
    assert "invoke start 'pbs-policy-server.service'" not in section
    assert "_dh_action" not in section


def test_the_reader_is_restarted_after_an_upgrade(control: Path) -> None:
    """A long-lived process must be restarted to run the new code."""
    assert "_dh_action=restart" in _section_for(control / "postinst", "'pbs-journal.service'")


def test_purge_removes_the_readers_state(control: Path) -> None:
    postrm = (control / "postrm").read_text()
    assert "rm -rf /var/lib/private/pbs-activated /var/lib/pbs-activated" in postrm
    assert "rm -rf /var/cache/private/pbs-policy /var/cache/pbs-policy" in postrm
    assert "deb-systemd-helper purge 'pbs-journal.service'" in postrm
    assert "deb-systemd-helper purge 'pbs-policy.socket'" in postrm
    assert "deb-systemd-helper purge 'pbs-policy-server.socket'" in postrm


def _section_for(script: Path, needle: str) -> str:
    """The debhelper snippets of a maintainer script that mention `needle`."""
    snippets = [
        chunk.split("# End automatically added section")[0]
        for chunk in script.read_text().split("# Automatically added by")[1:]
    ]
    return "\n".join(snippet for snippet in snippets if needle in snippet)


def test_ships_the_readme_and_the_cluster_guide(deb: Path) -> None:
    """Under /usr/share/doc, gzipped once larger than 4 KiB (Debian policy 12.3)."""
    paths = {path.removesuffix(".gz") for path in contents(deb)}
    assert "/usr/share/doc/pbs-activated/README.md" in paths
    assert "/usr/share/doc/pbs-activated/cluster.md" in paths


def test_postfix_files_trigger_the_package(control: Path) -> None:
    """Postfix installed later: its files under /var/spool/postfix wake our postinst,
    which starts whichever policy socket is enabled."""
    assert "interest-noawait /var/spool/postfix" in (control / "triggers").read_text()
    postinst = (control / "postinst").read_text()
    assert "for socket in pbs-policy.socket pbs-policy-server.socket; do" in postinst
    assert 'if systemctl --quiet is-enabled "$socket"' in postinst
    assert 'deb-systemd-invoke start "$socket"' in postinst


NEWS = REPO / "packaging/debian/NEWS"


def test_ships_the_release_notes_as_news_debian(deb: Path) -> None:
    """apt-listchanges shows NEWS.Debian before an upgrade: what an administrator must
    know (who may run grant, the store that moved)."""
    assert "/usr/share/doc/pbs-activated/NEWS.Debian.gz" in contents(deb)


def entry_versions(path: Path) -> list[str]:
    """The version of every entry of a changelog-format file (changelog, NEWS)."""
    result = run(["dpkg-parsechangelog", "-l", str(path), "--all", "--format", "rfc822"])
    assert result.returncode == 0, result.stderr
    return re.findall(r"^Version: (\S+)$", result.stdout, re.MULTILINE)


def test_every_news_entry_is_a_version_of_the_changelog() -> None:
    news = entry_versions(NEWS)
    assert news and set(news) <= set(entry_versions(REPO / "packaging/debian/changelog"))


def test_news_is_prose_not_a_list() -> None:
    """NEWS.Debian is read as paragraphs; lintian tags an entry that uses asterisks."""
    assert "*" not in NEWS.read_text()
