"""Settings of the `simulate` section (see collector/config.py for loading rules).

Every knob of the deterministic Japan/US fleet: its shape (sites, links, cells, hosts), its
clock (interval, acceleration, start), its calibration targets and the faults it injects.
The same settings and seed always give the same samples and the same batch bytes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CountryCode = Literal["JP", "US", "AE"]

# Reference figures of the source article (average consumer speed in Mb/s).
REFERENCE_SPEED_MBPS: dict[str, float] = {"JP": 217.11, "US": 279.93, "AE": 291.85}


class SimulateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- shape of the fleet -----------------------------------------------------------------
    seed: int = Field(
        20260401,
        ge=0,
        lt=2**63,
        description="Seed of every random choice; same seed, "
        "same settings => same samples and same batch bytes.",
    )
    countries: tuple[CountryCode, ...] = Field(
        ("JP", "US"),
        min_length=1,
        description="Countries with sites. AE (United Arab Emirates) is the article's speed "
        "reference and is off by default.",
    )
    sites_per_country: int = Field(
        3,
        ge=1,
        le=1000,
        description="Sites in each country; real city "
        "names are used in order, then repeated with a higher number.",
    )
    links_per_site: int = Field(8, ge=0, le=10_000, description="Network/optical links per site.")
    cells_per_site: int = Field(12, ge=0, le=10_000, description="5G NR cells per site.")
    hosts_per_site: int = Field(2, ge=0, le=1000, description="Servers per site.")
    cpus_per_host: int = Field(4, ge=1, le=256, description="CPUs per host (node_cpu_seconds_total).")
    record_link: bool = Field(
        True, description="Add the record-class optical link (NICT, 402 Tb/s) to the first Japanese site."
    )
    record_link_bps: float = Field(402e12, gt=0, description="Line rate of the record link in bits/s.")

    # --- clock ------------------------------------------------------------------------------
    interval_s: float = Field(
        10.0,
        ge=0.001,
        le=3600,
        description="Sampling interval in simulated seconds (every series, every site).",
    )
    acceleration: float = Field(
        1.0,
        ge=0,
        description="Simulated seconds per wall-clock second; 0 = as fast as possible (fast-forward).",
    )
    start_unix_s: float | None = Field(
        None,
        ge=0,
        description="Simulated start time (Unix seconds, event time); empty = now, floored to the interval.",
    )
    jitter_s: float = Field(
        0.05,
        ge=0,
        description="Per site and tick, samples are taken up to this "
        "much after the nominal tick (deterministic); must be < interval/2.",
    )
    batch_samples: int = Field(1000, ge=1, le=200_000, description="Target samples per batch.")
    batch_ticks: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Ticks one batch spans at most; a "
        "batch carries batch_samples // batch_ticks series of one site. When "
        "paced, a batch also spans at most about one wall-clock second.",
    )

    # --- calibration ------------------------------------------------------------------------
    speed_mbps: dict[str, float] = Field(
        default_factory=lambda: dict(REFERENCE_SPEED_MBPS),
        description="Fleet average per-subscriber DL speed (DRB.UEThpDl) per country in Mb/s. "
        "Defaults: the source article (JP 217.11, US 279.93, AE 291.85).",
    )
    coverage_5g: dict[str, float] = Field(
        default_factory=lambda: {"JP": 0.98, "US": 0.95, "AE": 0.99},
        description="Fleet average 5G coverage ratio (CELL.CoverageRatio) per country. JP 0.98 is "
        "Japan's target; US and AE are assumptions of the simulator.",
    )

    # --- injected faults --------------------------------------------------------------------
    reset_every_s: float = Field(
        21_600.0,
        ge=0,
        description="Mean simulated time between agent "
        "restarts per site (new boot_id, counters restart from 0 with a new "
        "start_time_unix_nano); 0 disables.",
    )
    clear_every_s: float = Field(
        43_200.0,
        ge=0,
        description="Mean simulated time between link "
        "counter clears per site: one link's counters restart from 0 "
        "with a new start_time_unix_nano and the same boot_id; 0 "
        "disables.",
    )
    wrap32: bool = Field(
        True,
        description="Copper links declare 32-bit octet/packet counters that "
        "start just below 2^32, so they wrap during the run.",
    )
    gap_probability: float = Field(
        0.005,
        ge=0,
        le=1,
        description="Per site, probability that a "
        "gap (gap_ticks missed polls) takes each run of gap_ticks + 1 "
        "ticks; gaps never touch, a delivered tick follows every gap.",
    )
    gap_ticks: int = Field(2, ge=1, le=100, description="Length of a gap in ticks.")
    duplicate_probability: float = Field(
        0.01, ge=0, le=1, description="Per batch, probability that it is sent twice (same agent_id and seq)."
    )
    late_probability: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Per batch, probability that it is held back and delivered after newer batches.",
    )
    late_delay_s: float = Field(
        15.0,
        ge=0,
        description="A late batch is delivered once the site's "
        "event time is this far past the batch's last sample.",
    )
    silent_after_s: float = Field(
        1800.0,
        ge=0,
        description="The last site of the fleet goes silent "
        "(sends nothing more) this many simulated seconds after the start; "
        "0 disables.",
    )

    # --- PM files (agents mode) ---------------------------------------------------------------
    pm_files: bool = Field(
        False,
        description="Agents mode: the simulated cells reach their agents "
        "as TS 32.435 PM files (one per site and granularity period, read by the "
        "agent's real cell source) instead of as counters in the batches. "
        "`collector run` turns it on.",
    )
    pm_granularity_s: int = Field(
        900,
        ge=1,
        le=86_400,
        description="Granularity period of the "
        "simulated PM files in simulated seconds (15 min like a gNB; "
        "`collector run` uses 10 unless set).",
    )

    # --- ground truth -----------------------------------------------------------------------
    truth_windows_s: tuple[int, ...] = Field(
        (10, 60, 300),
        min_length=1,
        description="Window "
        "lengths (s) of the ground truth; windows are aligned "
        "to multiples of the length in event time.",
    )

    @model_validator(mode="after")
    def _check(self) -> SimulateSettings:
        if self.jitter_s * 2 >= self.interval_s:
            raise ValueError("jitter_s must be smaller than interval_s / 2")
        for c in self.countries:
            if c not in self.speed_mbps or self.speed_mbps[c] <= 0:
                raise ValueError(f"speed_mbps has no positive figure for {c}")
            cov = self.coverage_5g.get(c)
            if cov is None or not 0.5 <= cov <= 1.0:
                raise ValueError(f"coverage_5g for {c} must be within 0.5..1")
        if len(set(self.countries)) != len(self.countries):
            raise ValueError("countries must not repeat")
        if any(w <= 0 for w in self.truth_windows_s):
            raise ValueError("truth_windows_s must be positive")
        if self.record_link_bps / 8 * self.interval_s * (self.gap_ticks + 1) >= 2**64:
            raise ValueError(
                "record_link_bps: the record link would count 2^64 bytes between "
                "two delivered samples; lower it, interval_s or gap_ticks"
            )
        return self
