"""The bwrap command line: mount order decides what the confined shell can see."""

from __future__ import annotations

from pathlib import Path

from pibridge.agent.sandbox import SandboxPolicy, bwrap_arguments, sandbox_shell_script


def mounts(arguments: list[str]) -> list[tuple[str, str]]:
    found = []
    for index, argument in enumerate(arguments):
        if argument in ("--tmpfs", "--bind", "--ro-bind"):
            found.append((argument, arguments[index + 1]))
    return found


def test_root_is_read_only_and_state_hidden_after_the_workspace() -> None:
    policy = SandboxPolicy("/usr/bin/bwrap", Path("/srv/ws"), (Path("/var/lib/pb"),))
    arguments = bwrap_arguments(policy)
    assert mounts(arguments) == [
        ("--ro-bind", "/"),
        ("--tmpfs", "/tmp"),
        ("--bind", "/srv/ws"),
        ("--tmpfs", "/var/lib/pb"),
    ]
    for required in ("--cap-drop", "--clearenv", "--unshare-pid", "--die-with-parent"):
        assert required in arguments
    assert "--unshare-net" in arguments


def test_a_workspace_inside_a_hidden_dir_is_bound_back_after_hiding() -> None:
    policy = SandboxPolicy("/usr/bin/bwrap", Path("/srv/state/ws"), (Path("/srv/state"),))
    assert mounts(bwrap_arguments(policy))[-2:] == [
        ("--tmpfs", "/srv/state"),
        ("--bind", "/srv/state/ws"),
    ]


def test_a_hidden_dir_inside_the_workspace_stays_hidden() -> None:
    policy = SandboxPolicy("/usr/bin/bwrap", Path("/srv/ws"), (Path("/srv/ws/.state"),))
    assert mounts(bwrap_arguments(policy))[-1] == ("--tmpfs", "/srv/ws/.state")


def test_network_can_be_allowed() -> None:
    policy = SandboxPolicy("/usr/bin/bwrap", Path("/srv/ws"), network=True)
    assert "--unshare-net" not in bwrap_arguments(policy)


def test_script_quotes_paths() -> None:
    policy = SandboxPolicy("/usr/bin/bwrap", Path("/srv/my ws"), (Path("/srv/it's"),))
    script = sandbox_shell_script(policy)
    assert "'/srv/my ws'" in script
    assert "'/srv/it'\"'\"'s'" in script
    assert script.rstrip().endswith('-- /bin/bash "$@"')
