"""The agent benchmark's report: its result, the block it writes into docs/benchmarks.md,
and what bounds the throughput."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.agent_profile import Profile
from bench.agent_stores import POLL_SECONDS, STORES, Store


@dataclass
class Result:
    invoices: int
    wall: float  # clock start (payment run, or agents started) -> all numbered and confirmed
    first_number: float  # clock start -> first invoicenum seen
    numbered_at: float  # clock start -> last invoicenum seen
    ledger_span: float  # first NumberReserved -> last NumberIssued, in the ledger
    cpu: dict[str, float]
    events: dict[str, int]
    writer: dict[str, float]
    checks: list[str]
    machine: dict[str, str]
    batch_size: int  # the agents' CONCORD_AGENT_BATCH_SIZE
    neighbours: float = 0.0  # cores used by others just before the run
    scans: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    functions: dict[str, tuple[int, float]] = field(default_factory=dict)
    stores: list[Store] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    profile_errors: list[str] = field(default_factory=list)
    preloaded: int = 0  # documents numbered before the run (--preload)
    preload_events: int = 0  # the ledger's events before the run
    preload_seconds: float = 0.0  # building and loading them, rebuilding the projections
    cold_start: bool = False  # the clock started with the agents, not with the payment run


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _cpu_rows(result: Result) -> list[tuple[str, float]]:
    """The CPU table's rows: the two PostgreSQL groups as one."""
    rows: list[tuple[str, float]] = []
    postgres = 0.0
    for name, seconds in result.cpu.items():
        if name.startswith("postgres"):
            postgres += seconds
            if name == "postgres backends":
                rows.append(("postgres", 0.0))
        else:
            rows.append((name, seconds))
    return [(name, postgres if name == "postgres" else seconds) for name, seconds in rows]


def render(result: Result, *, profile_requested: bool) -> str:
    n, wall = result.invoices, result.wall
    m = result.machine
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    measured = {k: v for k, v in result.cpu.items() if k != "other"}
    total_cpu = sum(measured.values())
    per_store = n / len(STORES)
    writer = result.writer
    tx = writer.get("transactions", 0.0)
    reservations = result.scans.get("reservations", (0, 0, 0))
    first_wait = "agent start-up, first heartbeat" if result.cold_start else "the agents' next poll"
    lines = [
        f"Measured {now} on {m['cores']} CPU cores ({m['cpu']}), Python {m['python']},"
        f" {m['postgres']}, {m['mariadb']}; everything on one machine.",
        "",
        f"Method: {len(STORES)} stores with {n:,} invoices without a number between them"
        f" ({', '.join(f'{s.invoices:,}' for s in result.stores)}; dated over 2024 in random"
        " order of id, each with its items, payment and `mod_invoicedata` snapshot),"
        " bulk-inserted before the clock starts; "
        + (
            f"the stores already hold {result.preloaded:,} invoices numbered by Concord before"
            f" the run ({', '.join(f'{len(s.numbered):,}' for s in result.stores)}, dated 2023),"
            " and so does the ledger: its"
            f" {result.preload_events:,} events built and COPYed as `bench.audit` builds its"
            " ledger (bench/agent_preload.py), projections by `concord audit --rebuild`, the"
            " agents' tables as their relay leaves them; set up in"
            f" {result.preload_seconds:.0f} s, not timed. One coordinator process on that"
            " database, started cold (the clock starts once its start-up chain check has"
            " reached the head)"
            if result.preloaded
            else "one coordinator process on a fresh PostgreSQL database"
        )
        + "; series `invoice` with its defaults (`{NUMBER}`, on payment)."
        + (
            " The invoices are Paid before the run. The clock starts when the three"
            " `python -m agent serve` processes are started (`--cold-start`: their start-up counts)"
            if result.cold_start
            else " The invoices are Unpaid, and the three `python -m agent serve` processes run"
            " before the clock, each having finished a numbering round (nothing due). The clock"
            " starts with the payment run: one `UPDATE tblinvoices SET status = 'Paid'` per store,"
            " the three at once (a burst, as WHMCS's cron or a gateway's batch makes)"
        )
        + f" (poll interval 0.2 s, batch {result.batch_size}, log level warning), and stops when"
        " every invoice has an"
        " `invoicenum` and every `mod_concord_outbox` row is confirmed (checked every"
        f" {POLL_SECONDS} s). CPU seconds per process from `/proc` over the same interval.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| invoices numbered (3 stores) | {n:,} |",
        f"| numbered before the run, in the stores and the ledger | {result.preloaded:,} |",
        f"| wall time, {'agents started' if result.cold_start else 'payment run'} → all numbered"
        f" and confirmed | {wall:.2f} s |",
        f"| **end to end** | **{n / wall:,.0f} numbers/s** |",
        f"| first number written after ({first_wait}) | {result.first_number:.2f} s |",
        f"| last number written after | {result.numbered_at:.2f} s |",
        (
            f"| ledger: first NumberReserved → last NumberIssued | {result.ledger_span:.1f} s"
            f" ({n / result.ledger_span:,.0f} numbers/s) |"
        )
        if result.ledger_span
        else "| ledger span | - |",
        f"| per store: one document every | {wall / per_store * 1000:.1f} ms |",
        f"| ledger transactions (group commit) | {tx:,.0f}: {writer.get('commands', 0) / max(tx, 1):.1f}"
        f" commands and {writer.get('seconds', 0) * 1000 / max(tx, 1):.2f} ms each; the writer was"
        f" busy {100 * writer.get('seconds', 0) / wall:.0f}% of the wall time |",
    ]
    if result.functions:
        lines.append(
            "| of which in PostgreSQL functions | "
            + ", ".join(
                f"`{name}` {total / max(calls, 1):.2f} ms"
                for name, (calls, total) in sorted(result.functions.items())
            )
            + " per call |"
        )
    lines += [
        f"| sequential scans of `reservations` | {reservations[0]:,}, reading {reservations[1]:,}"
        f" rows ({reservations[1] / n:,.0f} per number) |",
        f"| ledger events appended | {sum(result.events.values()):,}"
        f" ({', '.join(f'{k} {v:,}' for k, v in sorted(result.events.items()))}) |",
        f"| checks | {'all passed' if not result.checks else '; '.join(result.checks)} |",
        "",
        "| process | CPU s | cores (CPU s / wall s) | CPU ms per number |",
        "|---|---|---|---|",
    ]
    for name, seconds in _cpu_rows(result):
        lines.append(f"| {name} | {seconds:.1f} | {seconds / wall:.2f} | {seconds * 1000 / n:.2f} |")
    lines.append(
        f"| **all but other** | **{total_cpu:.1f}** | **{total_cpu / wall:.2f}**"
        f" of {m['cores']} | **{total_cpu * 1000 / n:.2f}** |"
    )
    lines += [
        "",
        "`postgres` is the backends of the benchmark's database plus the shared server processes"
        " (WAL writer, checkpointer…); `mariadb` is the whole `mariadbd`; the agents' CPU includes"
        " their start-up; `other` is everything else the machine did meanwhile (neighbours used"
        f" {result.neighbours:.2f} cores just before the run).",
        "",
        "**What bounds it.** " + bound_text(result),
    ]
    if result.profiles:
        lines += [
            "",
            "**Profile** (py-spy, 100 Hz, attached to the processes of the same run;"
            " `--format raw`, summarised):",
            "",
        ]
        for prof in result.profiles.values():
            lines += [
                f"*{prof.name}*: {prof.samples:,} samples, of which {_pct(prof.waiting, prof.samples)}"
                " in the event loop's poll (asleep, or woken and waiting for a core); the"
                f" other {prof.busy:,} by what they were doing (first matching frame of"
                " the stack):",
                "",
                "| where | share |",
                "|---|---|",
            ]
            lines += [
                f"| {label} | {_pct(count, prof.busy)} |"
                for label, count in prof.activities.most_common(10)
                if count >= 0.005 * prof.busy
            ]
            layers = ", ".join(
                f"{label} {_pct(count, prof.busy)}" for label, count in prof.layers.most_common(6)
            )
            leaves = ", ".join(
                f"`{label}` {_pct(count, prof.busy)}" for label, count in prof.leaves.most_common(4)
            )
            lines += ["", f"Innermost frame by layer: {layers}. Hottest functions: {leaves}.", ""]
        lines += [
            "`_SelectorSocketTransport.write`, `Connection._do_execute` and"
            " `StreamWriter._writelines` are where a process sends on a socket: on loopback"
            " the kernel delivers the data and wakes the receiver inside that call, so their"
            " share is the cost of round trips (MySQL statements, HTTP requests, PostgreSQL"
            " calls), not of Python code."
        ]
    elif profile_requested:
        lines += ["", f"Profile: failed ({'; '.join(result.profile_errors)})."]
    lines += [
        "",
        "Reproduce: `.venv/bin/python -m bench.agent_numbering --profile` (about 5 minutes;"
        " PostgreSQL on 127.0.0.1:5432 or `DATABASE_URL`, MariaDB on 127.0.0.1:3306 or"
        " `CONCORD_TEST_MYSQL_URL`, `.venv/bin/pip install py-spy` for `--profile`; rewrites this"
        " block). `--invoices N` for another size, `--preload N` for another history (0: fresh"
        " stores and ledger), `--quick` for 1,500 invoices on 3,000 numbered documents printed"
        " only, `--pg-set name=value` to try a PostgreSQL setting on the benchmark's database,"
        " `--cold-start` to start the agents with the clock.",
    ]
    return "\n".join(lines)


def bound_text(result: Result) -> str:
    wall, n = result.wall, result.invoices
    cores = float(result.machine["cores"] or 2)
    used = sum(v for k, v in result.cpu.items() if k != "other") / wall
    busy = used + result.cpu.get("other", 0.0) / wall
    writer_busy = result.writer.get("seconds", 0.0) / wall
    tx = max(result.writer.get("transactions", 0.0), 1.0)
    commands = result.writer.get("commands", 0.0) / tx
    tx_ms = result.writer.get("seconds", 0.0) * 1000 / tx
    agent_core = max((v for k, v in result.cpu.items() if k.startswith("agent ")), default=0) / wall
    text = (
        f"The two cores were {100 * busy / cores:.0f}% busy ({used:.2f} cores by the measured"
        f" processes, {sum(v for k, v in result.cpu.items() if k != 'other') * 1000 / n:.1f} ms"
        f" of CPU per number); no agent used more than {agent_core:.2f} of a core. "
    )
    if writer_busy > 0.8:
        text += (
            f"The coordinator's ledger writer, which appends one transaction at a time, was"
            f" busy {100 * writer_busy:.0f}% of the run: it is the bottleneck. Each of its"
            f" transactions took {tx_ms:.1f} ms and carried {commands:.1f} commands"
            f" ({commands / 2:.1f} numbers, a number being a reserve and a confirm): what the"
            " agents' batch requests had queued while the one before was written. The writer"
            " decides a transaction while the one before is written (reading its rows ahead"
            " on a second connection), then waits for PostgreSQL to commit it, one"
            " transaction after another:"
            f" {n:,} numbers at {commands / 2:.1f} per transaction need about"
            f" {n / (commands / 2):,.0f} transactions; at {tx_ms:.1f} ms that is"
            f" {n / (commands / 2) * tx_ms / 1000:.1f} s. "
        )
        if "concord_write_batch" in result.functions:
            writing = result.functions["concord_write_batch"][1] / tx
            text += f"{writing:.1f} ms of each transaction is spent inside `concord_write_batch`. "
        reservations = result.scans.get("reservations", (0, 0, 0))
        if reservations[1] > 50 * n:
            text += (
                f"PostgreSQL read {reservations[1]:,} rows of `reservations` in"
                f" {reservations[0]:,} sequential scans: lookups by key scan the whole"
                " table, so a transaction costs more the longer the ledger (the keys come"
                " from `jsonb_array_elements`/`jsonb_to_recordset`, which the planner takes"
                " for 100 rows, so a hash join over a sequential scan looks cheaper than"
                " index probes). "
            )
    elif busy > 0.85 * cores:
        text += (
            "The run is CPU-bound: everything shares two cores, so numbers/s follow the CPU"
            " a number costs across all processes. "
        )
    else:
        text += (
            f"Neither the cores nor the ledger writer ({100 * writer_busy:.0f}% busy) are"
            " saturated: the rate is bounded by latency, each agent numbering one document"
            f" at a time ({wall / (n / len(STORES)) * 1000:.1f} ms per document per store:"
            " a reserve round trip, then one MySQL transaction). "
        )
    return text
