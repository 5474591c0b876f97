"""How a source's service is stopped, started and checked on its host, for an in-place restore.

A spec names it per source (``sources.<name>.service``): either ``systemd: <unit>`` or three argv
lists ``stop``, ``start``, ``status``; the live directories an in-place restore swaps
(``data_dirs``, what each is depends on the kind) and the OS user that owns them (``owner``).
Commands run without a shell, with the allow-listed environment of :func:`child_env` and a
timeout; ``status`` follows the LSB convention: exit 0 = running, 3 = not running, anything else =
unknown (the restore refuses to go on).
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from metabackup.errors import RestoreError
from metabackup.fields import Argv, PathList, ProblemRow, SpecModel, between, matching
from metabackup.fsutil import child_env

log = logging.getLogger(__name__)

#: LSB ``status`` exit codes: running, and "program is not running"
RUNNING, NOT_RUNNING = 0, 3
SystemdUnit = matching(r"[A-Za-z0-9:_.@\-]{1,200}", "is not a systemd unit name", "a systemd unit, e.g. slapd.service")
OsUser = matching(r"[a-z_][a-z0-9_\-]{0,31}", "is not an OS user name", "the OS user that owns the data")


class ServiceControl(SpecModel):
    """``sources.<name>.service``: how to stop, start and check the source's service, and what it owns."""

    systemd: SystemdUnit | None = None
    stop: Argv | None = None
    start: Argv | None = None
    status: Argv | None = None
    data_dirs: PathList = Field(
        (), description="the live directories an in-place restore replaces (what each is depends on the kind)")
    owner: OsUser | None = Field(None, description="the OS user that owns data_dirs (restored files are given to it)")
    timeout: between(1, 3600) = Field(300, description="seconds each stop, start or status command may take")

    @model_validator(mode="after")
    def _one_way_to_control(self) -> ServiceControl:
        commands = [name for name in ("stop", "start", "status") if getattr(self, name) is not None]
        if self.systemd is not None and commands:
            raise ProblemRow(commands[0], "is given with systemd; give either systemd: <unit> or stop, start and "
                                          "status argv lists, not both")
        if self.systemd is None and len(commands) != 3:
            missing = [name for name in ("stop", "start", "status") if getattr(self, name) is None]
            raise ProblemRow(missing[0], "is required: give systemd: <unit>, or all of stop, start and status as "
                                         "argv lists (status exits 0 when running, 3 when stopped)")
        if len(set(self.data_dirs)) != len(self.data_dirs):
            raise ProblemRow("data_dirs", "lists a directory twice")
        for i, a in enumerate(self.data_dirs):
            for b in self.data_dirs[i + 1:]:
                if a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/"):
                    raise ProblemRow("data_dirs", f"{a} and {b}: one lies inside the other")
        return self

    def argv(self, action: Literal["stop", "start", "status"]) -> list[str]:
        if self.systemd is not None:
            verb = {"stop": ["stop"], "start": ["start"], "status": ["is-active", "--quiet"]}[action]
            return ["systemctl", *verb, self.systemd]
        return list(getattr(self, action))


@dataclass(frozen=True)
class Outcome:
    action: str
    returncode: int
    output: str  # the tail of stdout and stderr
    seconds: float


class Service:
    """Runs a :class:`ServiceControl`'s commands; ``what`` names the source in every message."""

    def __init__(self, control: ServiceControl, what: str):
        self.control, self.what = control, what

    def run(self, action: Literal["stop", "start", "status"]) -> Outcome:
        argv = self.control.argv(action)
        began = time.monotonic()
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                                  timeout=self.control.timeout, env=child_env())
        except subprocess.TimeoutExpired:
            return Outcome(action, -1, f"timed out after {self.control.timeout} s", time.monotonic() - began)
        except OSError as exc:
            return Outcome(action, -2, f"could not run {argv[0]}: {exc}", time.monotonic() - began)
        output = re.sub(r"\s+\n", "\n", (done.stdout + done.stderr).strip())[-1500:]
        return Outcome(action, done.returncode, output, time.monotonic() - began)

    def state(self) -> Literal["running", "stopped"]:
        """``running`` or ``stopped`` by the status command; a RestoreError when it says neither."""
        outcome = self.run("status")
        if outcome.returncode == RUNNING:
            return "running"
        if outcome.returncode == NOT_RUNNING:
            return "stopped"
        raise RestoreError(f"{self.what}: the service's status command {self._show('status')} did not say whether it "
                           f"runs (exit {outcome.returncode}; it must exit 0 when running, 3 when stopped): "
                           f"{outcome.output or 'no output'}")

    def stop(self) -> Outcome:
        """Stop the service and check that its status says so."""
        outcome = self._must("stop")
        if self.state() != "stopped":
            raise RestoreError(f"{self.what}: {self._show('stop')} exited 0 but the status command still says the "
                               "service runs")
        return outcome

    def start(self) -> Outcome:
        """Start the service and check that its status says it runs."""
        outcome = self._must("start")
        if self.state() != "running":
            raise RestoreError(f"{self.what}: {self._show('start')} exited 0 but the status command says the service "
                               "is not running")
        return outcome

    def _must(self, action: Literal["stop", "start"]) -> Outcome:
        log.info("%s: %s the service: %s", self.what, action, self._show(action))
        outcome = self.run(action)
        if outcome.returncode != 0:
            raise RestoreError(f"{self.what}: {self._show(action)} failed (exit {outcome.returncode}): "
                               f"{outcome.output or 'no output'}")
        log.info("%s: %s took %.1f s", self.what, action, outcome.seconds)
        return outcome

    def _show(self, action: Literal["stop", "start", "status"]) -> str:
        argv = self.control.argv(action)
        return " ".join(argv[:4]) + (" ..." if len(argv) > 4 else "")
