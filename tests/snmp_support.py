"""A real net-snmp agent (Debian's snmpd) on a free loopback UDP port, and an independent
reader (snmpget/snmpbulkwalk of the Debian `snmp` package).

The generated config serves this host's IF-MIB to a v2c community (`COMMUNITY`), to a v2c
community whose view hides the 64-bit ifHC* columns (`COMMUNITY32`, an old device), and to
a v3 authPriv user (`V3_USER`, SHA/AES). The daemon is stopped by pid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.waiting import eventually

COMMUNITY = "edge-ro-c0mm"
COMMUNITY32 = "edge-old-dev1ce"
V3_USER = "edge-agent"
V3_AUTH = "auth-key-9a8b7c6d"
V3_PRIV = "priv-key-1f2e3d4c"
HC_COLUMNS = (6, 7, 8, 9, 10, 11, 12, 13)  # ifHCIn/OutOctets and ifHC*Pkts of ifXTable


def have_snmpd() -> bool:
    return bool(shutil.which("snmpd") or Path("/usr/sbin/snmpd").exists()) and bool(
        shutil.which("snmpbulkwalk")
    )


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Snmpd:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self) -> str:
        hidden = "\n".join(f"view no64 excluded .1.3.6.1.2.1.31.1.1.1.{c}" for c in HC_COLUMNS)
        return (
            f"agentAddress udp:127.0.0.1:{self.port}\n"
            "view all included .1\n"
            "view no64 included .1\n"
            f"{hidden}\n"
            f"rocommunity {COMMUNITY} 127.0.0.1 -V all\n"
            f"rocommunity {COMMUNITY32} 127.0.0.1 -V no64\n"
            f'createUser {V3_USER} SHA "{V3_AUTH}" AES "{V3_PRIV}"\n'
            f"rouser {V3_USER} priv -V all\n"
        )

    async def start(self) -> None:
        conf = self.dir / "snmpd.conf"
        conf.write_text(self.config())
        persist = self.dir / "persist"
        persist.mkdir(exist_ok=True)
        snmpd = shutil.which("snmpd") or "/usr/sbin/snmpd"
        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(persist), "MIBS": ""}
        log = (self.dir / "snmpd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                snmpd,
                "-f",
                "-Lo",
                "-C",
                "-c",
                str(conf),
                "-M",
                str(self.dir / "nomibs"),
                "-m",
                "",
                "-p",
                str(self.dir / "snmpd.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        proc = self.proc

        async def answering() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"snmpd exited: {(self.dir / 'snmpd.log').read_text()}")
            return await self._answers()

        if not await eventually(answering, within=10.0, step=0.05):
            raise RuntimeError("snmpd did not answer")

    async def _answers(self) -> bool:
        p = await asyncio.create_subprocess_exec(
            "snmpget",
            "-v2c",
            "-c",
            COMMUNITY,
            "-t",
            "0.3",
            "-r",
            "0",
            "-On",
            "-Oq",
            self.address,
            "1.3.6.1.2.1.1.3.0",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await p.wait() == 0

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        self.proc = None


async def bulkwalk(address: str, oid: str, *auth: str) -> dict[str, str]:
    """{numeric OID: value} from snmpbulkwalk (-On -Oq -Oe -Ot: numbers, raw enums/ticks)."""
    args = list(auth) or ["-v2c", "-c", COMMUNITY]
    p = await asyncio.create_subprocess_exec(
        "snmpbulkwalk",
        *args,
        "-On",
        "-Oq",
        "-Oe",
        "-Ot",
        "-t",
        "2",
        "-r",
        "1",
        address,
        oid,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "MIBS": ""},
    )
    out, err = await p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"snmpbulkwalk failed: {err.decode()}")
    values: dict[str, str] = {}
    for line in out.decode().splitlines():
        oid_s, _, value = line.partition(" ")
        if not oid_s.startswith("."):
            continue
        values[oid_s[1:]] = value.strip().strip('"')
    return values


def v3_args(auth: str = V3_AUTH, priv: str = V3_PRIV) -> list[str]:
    return ["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA", "-A", auth, "-x", "AES", "-X", priv]
